"""Loading weights: state dicts, official-style pickled checkpoints (without their code), hostile pickles."""

from __future__ import annotations

import os
import sys
import types
import zipfile

import pytest
import torch
from torch import nn

from detectors import build_detector
from detectors.yolov5.weights import WeightsError, load_weights, read_state_dict

# Ultralytics' classes, by the module they live in.
FAKE_CLASSES = {
    "models.common": ("Conv", "Bottleneck", "C3", "SPPF", "Concat"),
    "models.yolo": ("Detect", "DetectionModel"),
}


def save_official_style_checkpoint(model: nn.Module, path, *, with_ema: bool = True, package: str = "") -> None:
    """Pickle ``model`` the way Ultralytics' train.py + strip_optimizer do: whole modules, half precision.

    Each of our modules gets the class of the same name from fake ``models.common`` / ``models.yolo``
    modules (so the pickle names ``models.common.C3``, like theirs); they exist only while saving.
    """
    fakes: dict[str, types.ModuleType] = {}
    classes: dict[str, type] = {}
    for mod_name, names in FAKE_CLASSES.items():
        mod_name = package + mod_name  # "yolov5.models.yolo": the PyPI package's train.py
        mod = types.ModuleType(mod_name)
        for name in names:
            cls = type(name, (nn.Module,), {"__module__": mod_name})
            setattr(mod, name, cls)
            classes[name] = cls
        fakes[mod_name] = mod
    parents = [package + "models", *([package.rstrip(".")] if package else [])]
    saved = {k: sys.modules.get(k) for k in (*parents, *fakes)}
    sys.modules.update({**{p: types.ModuleType(p) for p in parents}, **fakes})
    try:
        for m in model.modules():
            name = "DetectionModel" if m is model else type(m).__name__
            if name in classes:
                m.__class__ = classes[name]
        model.half()
        # Attributes their DetectionModel / Detect carry besides tensors.
        model.names = {0: "Car", 1: "Pedestrian", 2: "Cyclist"}
        model.yaml = {"nc": 3, "depth_multiple": 0.33, "width_multiple": 0.25}
        model.model[-1].grid = [torch.zeros(1)] * 3
        ckpt = {
            "epoch": -1,
            "best_fitness": None,
            "model": model,
            "ema": model if with_ema else None,
            "updates": None,
            "optimizer": None,
            "opt": {"weights": "yolov5n.pt", "imgsz": 640},
            "date": "2022-11-22T00:00:00",
        }
        torch.save(ckpt, path)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.fixture
def source_model():
    torch.manual_seed(0)
    return build_detector("yolov5n", num_classes=3)


def test_official_style_checkpoint_loads_without_its_code(tmp_path, source_model):
    want = {k: v.half().float() if v.is_floating_point() else v.clone() for k, v in source_model.state_dict().items()}
    path = tmp_path / "yolov5n.pt"
    save_official_style_checkpoint(source_model, path)
    assert "models.common" not in sys.modules  # nothing of theirs is importable while loading
    with pytest.raises(Exception):  # noqa: B017 - a plain torch.load cannot even resolve their classes
        torch.load(path, weights_only=False)

    state, source, names = read_state_dict(path)
    assert source == "ultralytics" and names == ["Car", "Pedestrian", "Cyclist"]
    assert list(state) == list(want)
    for k in want:
        assert state[k].dtype == want[k].dtype
        torch.testing.assert_close(state[k], want[k], rtol=0, atol=0)

    torch.manual_seed(1)
    model = build_detector("yolov5n", num_classes=3)
    report = load_weights(model, path)
    assert report.skipped == [] and len(report.loaded) == len(want)
    torch.testing.assert_close(model.state_dict()["model.2.m.0.cv2.conv.weight"], want["model.2.m.0.cv2.conv.weight"])


def test_a_checkpoint_of_the_pypi_yolov5_package_loads_too(tmp_path, source_model):
    """pip's `yolov5` train.py pickles `yolov5.models.yolo.DetectionModel`, not `models.yolo...`."""
    want = {k: v.half().float() if v.is_floating_point() else v.clone() for k, v in source_model.state_dict().items()}
    path = tmp_path / "yolov5n-pypi.pt"
    save_official_style_checkpoint(source_model, path, package="yolov5.")
    with zipfile.ZipFile(path) as archive:  # the pickle names the package's module, as theirs does
        pickled = archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))
    assert b"yolov5.models.yolo" in pickled
    state, source, _names = read_state_dict(path)
    assert source == "ultralytics" and list(state) == list(want)
    torch.testing.assert_close(state["model.2.m.0.cv2.conv.weight"], want["model.2.m.0.cv2.conv.weight"])


def test_class_count_mismatch_skips_only_the_head_output_convs(tmp_path):
    torch.manual_seed(0)
    coco = build_detector("yolov5n", num_classes=80)
    path = tmp_path / "coco.pt"
    save_official_style_checkpoint(coco, path, with_ema=False)
    model = build_detector("yolov5n", num_classes=3)
    head_before = model.model[24].m[0].weight.detach().clone()
    report = load_weights(model, path)
    assert report.skipped == [f"model.24.m.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert "model.24.anchors" in report.loaded and "model.0.conv.weight" in report.loaded
    assert len(report.loaded) + len(report.skipped) == len(model.state_dict())
    assert torch.equal(model.model[24].m[0].weight, head_before)  # kept its own init
    assert "skipped (class count differs): model.24.m.0.weight" in report.summary()


def test_plain_state_dict_loads_and_reproduces_outputs(tmp_path, source_model):
    path = tmp_path / "sd.pt"
    torch.save(source_model.state_dict(), path)
    torch.manual_seed(5)
    model = build_detector("yolov5n", num_classes=3)
    report = load_weights(model, path)
    assert report.source == "state_dict" and not report.skipped
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.eval().inference_raw(x), source_model.eval().inference_raw(x))


def test_weights_of_another_size_are_an_error_naming_file_and_key(tmp_path):
    path = tmp_path / "s.pt"
    torch.save(build_detector("yolov5s", num_classes=3).state_dict(), path)
    with pytest.raises(WeightsError, match=r"s\.pt: model\.0\.conv\.weight has shape \(32, 3, 6, 6\).*\(16, 3, 6, 6\)"):
        load_weights(build_detector("yolov5n", num_classes=3), path)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_calls_os_system_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": _Exploit(marker)}, path)
    with pytest.raises(WeightsError, match=r"evil\.pt: refused to load: the pickle calls (posix|os|nt)\.system"):
        load_weights(build_detector("yolov5n", num_classes=3), path)
    assert not marker.exists()


def test_missing_or_garbage_files_are_clear_errors(tmp_path):
    model = build_detector("yolov5n", num_classes=3)
    with pytest.raises(WeightsError, match="nope.pt: no such weights file"):
        load_weights(model, tmp_path / "nope.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt: not a"):
        load_weights(model, junk)
