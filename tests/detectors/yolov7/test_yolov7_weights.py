"""Loading the yolov7 repository's checkpoints (pickled whole models) and state dicts, without their code."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from detectors import build_detector
from detectors.yolov7.weights import WeightsError, load_weights

# Module of each of our classes in their repository (the class names are theirs already).
THEIR_MODULES = {"YOLOv7Family": ("models.yolo", "Model"), "Detect": ("models.yolo", "Detect"),
                 "IDetect": ("models.yolo", "IDetect")}


def save_their_style_checkpoint(model: nn.Module, path) -> None:
    """Pickle ``model`` as their train.py does (``{'model': Model.half(), 'ema': ..., ...}``), each module
    under the class of the same name in fake ``models.common`` / ``models.yolo`` modules, which exist only
    while saving (so the loader cannot import them)."""
    fakes = {name: types.ModuleType(name) for name in ("models", "models.common", "models.yolo")}
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    try:
        for m in model.modules():
            if type(m).__module__.startswith("detectors.yolov7"):
                module, name = THEIR_MODULES.get(type(m).__name__, ("models.common", type(m).__name__))
                cls = getattr(fakes[module], name, None) or type(name, (nn.Module,), {"__module__": module})
                setattr(fakes[module], name, cls)
                m.__class__ = cls
        model.half()
        torch.save({"epoch": 3, "best_fitness": None, "training_results": "", "model": model, "ema": model,
                    "updates": 10, "optimizer": None, "wandb_id": None}, path)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def test_their_train_checkpoint_loads_every_tensor_without_their_code(tmp_path):
    torch.manual_seed(0)
    source = build_detector("yolov7_tiny", num_classes=3)
    expected = {k: v.half().float() if v.is_floating_point() else v for k, v in source.state_dict().items()}
    save_their_style_checkpoint(source, tmp_path / "last.pt")
    assert "models.yolo" not in sys.modules
    model = build_detector("yolov7_tiny", num_classes=3)
    report = load_weights(model, tmp_path / "last.pt")
    assert report.source == "ultralytics" and not report.skipped
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_another_class_count_skips_only_the_class_dependent_head_tensors(tmp_path):
    torch.save(build_detector("yolov7_tiny", num_classes=80).state_dict(), tmp_path / "coco.pt")
    report = load_weights(build_detector("yolov7_tiny", num_classes=3), tmp_path / "coco.pt")
    assert sorted(report.skipped) == sorted(
        [f"model.77.m.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
        + [f"model.77.im.{i}.implicit" for i in range(3)])


def test_a_checkpoint_of_another_family_is_one_line_naming_the_file_and_leaves_the_model_as_it_was(tmp_path):
    torch.save(build_detector("yolov7_tiny", num_classes=3).state_dict(), tmp_path / "tiny.pt")
    model = build_detector("yolov4_csp", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError) as err:
        load_weights(model, tmp_path / "tiny.pt")
    message = str(err.value)
    assert "\n" not in message and "tiny.pt" in message and "'model." in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_layer_whose_shape_differs_is_named_in_the_error(tmp_path):
    state = build_detector("yolov7_tiny", num_classes=3).state_dict()
    state["model.0.conv.weight"] = torch.zeros(16, 3, 3, 3)
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(WeightsError, match=r"model\.0\.conv\.weight has shape \(16, 3, 3, 3\)"):
        load_weights(build_detector("yolov7_tiny", num_classes=3), tmp_path / "edited.pt")
