"""LGD as a comparator (detectors/comparators/lgd.py): what it feeds where, what gets gradients, what is
training-only, and one epoch through the trainer (what `mssd train` runs). YOLOv5n at 64 px, a narrow teacher (hidden_dim 16)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from detectors.api import DetectorOutput
from detectors.comparators.lgd import hidden_dim
from detectors.config import parse_config
from detectors.distillation import build_distillation_for, targets_to_boxes
from detectors.engine.trainer import fit
from detectors.errors import ConfigError
from detectors.model_info import count_params, model_info
from detectors.yolov5.loss import YOLOv5Loss
from detectors.zoo import build_detector
from losses.lgd import lgd_distill_loss

REPO = Path(__file__).resolve().parents[2]
CLASSES = ["a", "b", "c"]
TARGETS = torch.tensor([[0, 1, 0.5, 0.5, 0.5, 0.4], [0, 0, 0.25, 0.3, 0.3, 0.4], [1, 2, 0.7, 0.6, 0.5, 0.6]])


def config(detector: str = "yolov5n", **lgd):
    lgd = {"hidden_dim": 16, "heads": 2, **lgd}
    return parse_config({"detector": {"name": detector}, "data": {"classes": CLASSES, "img_size": 64},
                         "losses": {"method": "lgd", "lgd": lgd}})


def build(**lgd):
    torch.manual_seed(0)
    cfg = config(**lgd)
    model = build_detector("yolov5n", num_classes=len(CLASSES)).train()
    return cfg, model, build_distillation_for(cfg, model)


def teacher_maps(lgd, output, targets):
    boxes, batch_index = targets_to_boxes(targets, 64)
    return lgd.teacher(output.head_inputs, boxes, targets[:, 1].long(), batch_index, (64, 64))


def test_terms_are_the_weighted_distillation_and_the_teacher_maps_detection_loss_through_the_students_head():
    cfg, model, distillation = build(weight=0.5, teacher_weight=2.0, context_box=True)
    lgd = distillation.comparator
    assert distillation.term_names == ("lgd", "lgd/distill", "lgd/teacher_gt")
    images = torch.rand(2, 3, 64, 64)
    output = model(images)
    terms = distillation(output, TARGETS, 64, images=images)
    assert terms["lgd"].item() == pytest.approx((terms["lgd/distill"] + terms["lgd/teacher_gt"]).item(), rel=1e-6)

    maps = teacher_maps(lgd, output, TARGETS)  # the same maps again: nothing random in the teacher
    assert {s: m.shape for s, m in maps.items()} == {s: f.shape for s, f in output.head_inputs.items()}
    head = model.detect([maps[s] for s in (8, 16, 32)])
    gt_total, _ = YOLOv5Loss(model, img_size=64, gains=cfg.losses.gt)(DetectorOutput(head, {}, {}, maps), TARGETS)
    assert terms["lgd/teacher_gt"].item() == pytest.approx(2.0 * gt_total.item() / 2, rel=1e-5)  # per image
    adapted = [lgd.adapters[str(s)](output.head_inputs[s]) for s in (8, 16, 32)]
    expected = 0.5 * lgd_distill_loss(adapted, [maps[s] for s in (8, 16, 32)])
    assert terms["lgd/distill"].item() == pytest.approx(expected.item(), rel=1e-5)
    # An adapter is ``adapter_convs`` 3x3 convs with ReLU between, channels kept (LGD's SequentialConvs).
    assert [type(m).__name__ for m in lgd.adapters["16"]] == ["Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d"]


def test_an_image_never_sees_another_images_labels_or_features():
    _, model, distillation = build(context_box=True)
    model.eval()  # BatchNorm on running statistics: the student's maps of an image depend on that image only
    lgd = distillation.comparator
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = teacher_maps(lgd, model(images), TARGETS)
        other = images.clone()
        other[1] = torch.rand(3, 64, 64)
        moved = TARGETS.clone()
        moved[2, 2:] = torch.tensor([0.3, 0.3, 0.2, 0.2])
        after = teacher_maps(lgd, model(other), moved)
    for s in (8, 16, 32):
        torch.testing.assert_close(after[s][0], before[s][0], rtol=0, atol=1e-6)
        assert not torch.allclose(after[s][1], before[s][1])


def test_images_without_objects_give_finite_terms():
    torch.manual_seed(0)
    model = build_detector("yolov5n", num_classes=len(CLASSES)).train()
    images = torch.rand(2, 3, 64, 64)
    # No object in the batch (no label rows at all, or the context boxes alone), and objects in image 0 only.
    for context_box, targets in ((False, torch.zeros(0, 6)), (True, torch.zeros(0, 6)), (False, TARGETS[:2])):
        distillation = build_distillation_for(config(context_box=context_box), model)
        terms = distillation(model(images), targets, 64, images=images)
        assert all(math.isfinite(v.item()) for v in terms.values()), (context_box, len(targets))
        terms["lgd"].backward()


def grads(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_gradients_follow_the_reference_the_teacher_learns_from_the_detection_loss_only():
    # Distillation only: the teacher map is a target, so the label-guided teacher gets no gradient.
    _, model, distillation = build(teacher_weight=0.0)
    images = torch.rand(2, 3, 64, 64)
    distillation(model(images), TARGETS, 64, images=images)["lgd"].backward()
    lgd = distillation.comparator
    assert grads(lgd.teacher) == 0 and grads(lgd.adapters) > 0 and grads(model.model[17]) > 0
    # Teacher detection loss only: the teacher learns, and so does the student's head it runs through.
    _, model, distillation = build(weight=0.0)
    distillation(model(images), TARGETS, 64, images=images)["lgd"].backward()
    lgd = distillation.comparator
    assert grads(lgd.teacher.label_encoder) > 0 and grads(lgd.teacher.refine) > 0 and grads(model.detect) > 0
    assert grads(lgd.adapters) == 0


def test_the_pre_distillation_epochs_detach_the_students_side():
    # No teacher loss and detached appearance: the student's gradient can only come from the distillation.
    _, model, distillation = build(teacher_weight=0.0, detach_appearance=True, pre_distill_fraction=0.2)
    lgd = distillation.comparator
    images = torch.rand(2, 3, 64, 64)
    seen = []
    for epoch in (2, 3):  # of 10: epochs 1-2 are pre-distillation, 3 on distil
        model.zero_grad()
        distillation.zero_grad()
        distillation.start_epoch(epoch, 10)  # the trainer's epoch hook, forwarded to the comparator
        distillation(model(images), TARGETS, 64, images=images)["lgd"].backward()
        seen.append((grads(model), grads(lgd.adapters)))
    assert seen[0][0] == 0 and seen[0][1] > 0  # the adapter learns, the student does not move
    assert seen[1][0] > 0
    distillation.start_epoch(1, 1)  # floor(0.2 * 1) = 0 pre-distillation epochs: a one-epoch run distils at once
    assert lgd.distilling


def test_the_teacher_is_training_only_and_counted_apart():
    cfg, model, distillation = build()
    keys = set(build_detector("yolov5n", num_classes=3).state_dict())
    assert set(model.state_dict()) == keys  # nothing of LGD in the detector's weights
    assert all(k.startswith("lgd.") for k in distillation.state_dict())
    assert distillation.count_parameters() == {"lgd": count_params(distillation.comparator),
                                               "total": count_params(distillation.comparator)}
    info = model_info(model, name="yolov5n", num_classes=3, img_size=64, distillation=distillation)
    assert info.training_parts["lgd"].params == count_params(distillation.comparator)
    assert info.training_parts["lgd"].gflops > 0


def test_the_default_width_is_the_students_median_head_input_width():
    cfg = parse_config({"detector": {"name": "yolov5n"}, "data": {"classes": CLASSES, "img_size": 64},
                        "losses": {"method": "lgd"}})
    assert cfg.losses.lgd.hidden_dim is None
    lgd = build_distillation_for(cfg, build_detector("yolov5n", num_classes=3)).comparator
    assert lgd.hidden_dim == 128  # YOLOv5n's head inputs: 64 / 128 / 256
    assert lgd.teacher.student_proj["8"][0].out_channels == 128 and lgd.teacher.refine[0].out_channels == 128
    assert lgd.teacher.to_level["16"].__class__.__name__ == "Identity"  # 128 already
    rule = SimpleNamespace(hidden_dim=None, heads=8)
    assert hidden_dim(rule, {8: 128, 16: 256, 32: 512}) == 256  # YOLOv5s, the paper's student
    assert hidden_dim(rule, {s: 256 for s in (8, 16, 32, 64, 128)}) == 256  # LGD's FPN: their 256
    with pytest.raises(ConfigError, match=r"losses\.lgd\.heads: must divide the hidden dim 36"):
        hidden_dim(rule, {8: 20, 16: 36, 32: 72})


def test_config_and_detector_errors_are_one_clear_line():
    with pytest.raises(ConfigError, match=r"losses\.lgd\.heads: must divide losses\.lgd\.hidden_dim 16, got 3"):
        config(heads=3)
    with pytest.raises(ConfigError, match=r"losses\.lgd\.interaction"):
        config(interaction="teacher_fill")
    with pytest.raises(ConfigError, match=r"lgd runs the detector's head on its teacher maps; YOLOX has no "
                                          r"forward_head"):
        cfg = config("yolox_nano")
        build_distillation_for(cfg, build_detector("yolox_nano", num_classes=3))


def test_an_lgd_epoch_trains_through_the_common_trainer_and_logs_its_terms(tmp_path):
    cfg = parse_config({
        "detector": {"name": "yolov5n"},
        "data": {"format": "synthetic", "root": str(tmp_path / "data"), "img_size": 64, "workers": 0,
                 "synthetic": {"images": 5, "seed": 0, "width": 128, "height": 64}, "augment": {"mosaic": 0.0}},
        "losses": {"method": "lgd", "lgd": {"hidden_dim": 16, "heads": 2, "context_box": True}},
        "train": {"epochs": 1, "batch_size": 2, "max_steps_per_epoch": 1, "warmup_epochs": 0, "device": "cpu"},
        "eval": {"max_det": 10},
    })
    metrics = fit(cfg, tmp_path / "run")
    terms = ("loss/lgd", "loss/lgd/distill", "loss/lgd/teacher_gt")
    assert all(math.isfinite(metrics[k]) for k in terms) and "loss/distill" not in metrics
    assert metrics["loss/lgd"] == pytest.approx(metrics["loss/lgd/distill"] + metrics["loss/lgd/teacher_gt"], rel=1e-5)
    assert metrics["loss/lgd/teacher_gt"] > 0 and metrics["loss/lgd/distill"] > 0
    # per image: L_gt + L_lgd / batch (losses.scale unscaled_terms, the default: only L_gt carries the batch)
    assert metrics["loss/total"] == pytest.approx(metrics["loss/gt"] + metrics["loss/lgd"] / 2, rel=1e-4)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    assert not any("lgd" in k for k in state["model"])  # the exported detector has none of LGD


def test_the_search_space_names_flat_config_keys_mssd_tune_accepts():
    from study.search_space import load_search_space

    space = load_search_space(REPO / "search_spaces" / "lgd.yaml")
    assert space.keys and all(k.startswith("losses.lgd.") for k in space.keys)
