"""The wiring of MSSD and MAD to a detector: config -> modules, ablation switches, training-only params."""

import math

import pytest
import torch
from torch import nn

from detectors.config import parse_config
from detectors.distillation import TERMS, Distillation, build_distillation, targets_to_boxes
from detectors.errors import ConfigError
from losses.gaussian_mask import gaussian_mask
from losses.mssd import mssd_loss

# YOLOv5s' taps: {stride: (teacher_channels, student_channels)}; only stride 32 needs a projector.
YOLOV5S_TAPS = {8: (128, 128), 16: (256, 256), 32: (256, 512)}
SMALL_TAPS = {8: (4, 4), 16: (6, 6), 32: (5, 8)}
IMG = 64


class TappedModel(nn.Module):
    """Stands in for any detector honouring the tap contract: no layer indices, just channels."""

    strides = (8, 16, 32)

    def __init__(self, tap_channels):
        super().__init__()
        self.tap_channels = dict(tap_channels)
        self.body = nn.Conv2d(3, 3, 1)


def losses_cfg(**overrides):
    data = {"mssd": {}, "mad": {}}
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            data[section][name] = value
        else:
            data[section] = value
    return parse_config({"losses": data}).losses


def tapped_output(tap_channels=SMALL_TAPS, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    teachers, students = {}, {}
    for s, (ct, cs) in tap_channels.items():
        teachers[s] = torch.randn(batch, ct, IMG // s, IMG // s, generator=g).requires_grad_()
        students[s] = torch.randn(batch, cs, IMG // s, IMG // s, generator=g).requires_grad_()
    return {"teachers": teachers, "students": students}


# Image 0: a 32 x 16 box centred at (24, 24); image 1: a 16 x 16 box at (48, 40).
TARGETS = torch.tensor([[0, 1, 24 / IMG, 24 / IMG, 32 / IMG, 16 / IMG], [1, 0, 48 / IMG, 40 / IMG, 0.25, 0.25]])


def test_targets_become_xyxy_input_pixels():
    boxes, index = targets_to_boxes(TARGETS, IMG)
    torch.testing.assert_close(boxes, torch.tensor([[8.0, 16.0, 40.0, 32.0], [40.0, 32.0, 56.0, 48.0]]))
    assert index.tolist() == [0, 1] and index.dtype == torch.long
    boxes, _ = targets_to_boxes(TARGETS[:1], (32, 128))  # (height, width)
    # cx = 0.375 * 128 = 48, w = 0.5 * 128 = 64; cy = 0.375 * 32 = 12, h = 0.25 * 32 = 8.
    torch.testing.assert_close(boxes, torch.tensor([[16.0, 8.0, 80.0, 16.0]]))


def test_default_config_builds_both_modules_sized_from_the_taps():
    dist = build_distillation(losses_cfg(), TappedModel(YOLOV5S_TAPS))
    assert dist.mssd is not None and dist.mad is not None
    assert dist.mssd.weights == {8: 0.05, 16: 1.0, 32: 1.0}
    assert dist.mad.sigma2 == 2.0
    counts = dist.count_parameters()
    # One 1x1 projector 512 -> 256 with bias; adapters conv(1 -> C, 3x3) with bias for C = 128, 256, 512.
    assert counts["mssd"] == 512 * 256 + 256
    assert counts["mad"] == (9 + 1) * (128 + 256 + 512)
    assert counts["total"] == counts["mssd"] + counts["mad"]


def test_config_values_reach_the_modules():
    cfg = losses_cfg(mssd__gamma=0.01, mssd__w_m=0.5, mssd__w_l=2.0, mssd__detach_teacher=False,
                     mad__sigma2=8.0, mad__adapter_kernel=1, lambda_distill=3.0, lambda_mask=0.5)
    dist = build_distillation(cfg, TappedModel(SMALL_TAPS))
    assert dist.mssd.weights == {8: 0.01, 16: 0.5, 32: 2.0} and dist.mssd.detach_teacher is False
    assert dist.mad.sigma2 == 8.0 and dist.mad.adapters["8"][0].kernel_size == (1, 1)
    assert (dist.lambda_distill, dist.lambda_mask) == (3.0, 0.5)


def test_forward_reports_every_term_with_eq_values():
    dist = build_distillation(losses_cfg(), TappedModel(SMALL_TAPS))
    out = tapped_output()
    terms = dist(out, TARGETS, IMG)
    assert tuple(terms) == TERMS
    projected = {s: dist.mssd.projectors[str(s)](out["students"][s]) for s in SMALL_TAPS}
    torch.testing.assert_close(terms["distill"], mssd_loss(projected, out["teachers"], {8: 0.05, 16: 1.0, 32: 1.0}))
    # The mask term from first principles: eq 5 masks at each stride, through the adapters, vs F.
    boxes = torch.tensor([[8.0, 16.0, 40.0, 32.0], [40.0, 32.0, 56.0, 48.0]])
    levels = []
    for s in SMALL_TAPS:
        mask = gaussian_mask(boxes, torch.tensor([0, 1]), 2, (IMG // s, IMG // s), s, 2.0)
        levels.append(((dist.mad.adapters[str(s)](mask) - out["students"][s]) ** 2).mean())
    torch.testing.assert_close(terms["mask"], sum(levels) / 3)


def build_variant(full, mssd, mad):
    """The ablation variant, sharing the full model's projector/adapter weights for comparison."""
    dist = build_distillation(losses_cfg(mssd__enabled=mssd, mad__enabled=mad), TappedModel(SMALL_TAPS))
    if mssd:
        dist.mssd.load_state_dict(full.mssd.state_dict())
    if mad:
        dist.mad.load_state_dict(full.mad.state_dict())
    return dist


DISTILL_TERMS = ("distill", "distill_s", "distill_m", "distill_l")


@pytest.mark.parametrize(("mssd", "mad"), [(False, False), (True, False), (False, True), (True, True)])
def test_ablation_switches_change_exactly_their_terms(mssd, mad):
    full = build_distillation(losses_cfg(), TappedModel(SMALL_TAPS))
    out = tapped_output()
    reference = full(out, TARGETS, IMG)
    assert all(reference[t].item() > 0 for t in TERMS)
    variant = build_variant(full, mssd, mad)
    terms = variant(out, TARGETS, IMG)
    assert set(terms) == set(TERMS)
    for name in DISTILL_TERMS:
        expected = reference[name] if mssd else torch.tensor(0.0)
        torch.testing.assert_close(terms[name], expected)
    torch.testing.assert_close(terms["mask"], reference["mask"] if mad else torch.tensor(0.0))
    assert (variant.mssd is not None) == mssd and (variant.mad is not None) == mad
    counts = variant.count_parameters()
    assert (counts["mssd"] > 0) == mssd and (counts["mad"] > 0) == mad


def test_baseline_total_is_the_detection_loss_alone():
    dist = build_distillation(losses_cfg(mssd__enabled=False, mad__enabled=False), TappedModel(SMALL_TAPS))
    gt_total = torch.tensor(4.0, requires_grad=True)
    terms = dist(tapped_output(), TARGETS, IMG)
    assert dist.total_loss(gt_total, terms, batch_size=2).item() == 4.0
    assert list(dist.parameters()) == []


def test_total_loss_is_eq_7_in_the_yolov5_batch_convention():
    cfg = losses_cfg(lambda_distill=2.0, lambda_mask=0.5, scale="batch")
    dist = build_distillation(cfg, TappedModel(SMALL_TAPS))
    terms = dist(tapped_output(), TARGETS, IMG)
    gt_per_image = 1.25
    total = dist.total_loss(torch.tensor(gt_per_image * 2), terms, batch_size=2)
    expected = 2 * (gt_per_image + 2.0 * terms["distill"].item() + 0.5 * terms["mask"].item())
    assert total.item() == pytest.approx(expected)


def test_the_default_scale_adds_the_distillation_terms_unscaled():
    """The default reading since the CPU-budget study (docs/findings.md): only L_gt carries the batch."""
    cfg = losses_cfg(lambda_distill=2.0, lambda_mask=0.5)
    assert cfg.scale == "unscaled_terms"
    dist = build_distillation(cfg, TappedModel(SMALL_TAPS))
    terms = dist(tapped_output(), TARGETS, IMG)
    total = dist.total_loss(torch.tensor(1.25 * 2), terms, batch_size=2)
    expected = 2 * 1.25 + 2.0 * terms["distill"].item() + 0.5 * terms["mask"].item()
    assert total.item() == pytest.approx(expected)


def test_gradients_reach_students_projectors_and_adapters_but_not_teachers():
    dist = build_distillation(losses_cfg(), TappedModel(SMALL_TAPS))
    out = tapped_output()
    terms = dist(out, TARGETS, IMG)
    dist.total_loss(torch.tensor(0.0), terms, batch_size=2).backward()
    assert all(t.grad is None for t in out["teachers"].values())
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in out["students"].values())
    assert all(p.grad is not None for p in dist.parameters())
    assert dist.mssd.projectors["32"].weight.grad.abs().sum() > 0
    assert all(dist.mad.adapters[str(s)][0].weight.grad.abs().sum() > 0 for s in SMALL_TAPS)


def test_a_detector_without_taps_cannot_enable_distillation():
    class Plain(nn.Module):
        pass

    with pytest.raises(ConfigError, match="tap_channels"):
        build_distillation(losses_cfg(), Plain())
    dist = build_distillation(losses_cfg(mssd__enabled=False, mad__enabled=False), Plain())
    assert isinstance(dist, Distillation) and dist.count_parameters()["total"] == 0


def test_binary_mask_config_is_accepted():
    dist = build_distillation(losses_cfg(mad__sigma2=".inf"), TappedModel(SMALL_TAPS))
    assert math.isinf(dist.mad.sigma2)
    assert torch.isfinite(dist(tapped_output(), TARGETS, IMG)["mask"])


def test_yolov5_gets_mssd_from_its_taps_and_keeps_no_training_only_weights():
    from detectors import build_detector

    torch.manual_seed(0)
    model = build_detector("yolov5n", num_classes=3).train()
    dist = build_distillation(losses_cfg(), model)
    images = torch.rand(2, 3, IMG, IMG)
    terms = dist(model(images), TARGETS, IMG)
    assert all(torch.isfinite(v) and v.item() > 0 for v in terms.values())
    n_model = sum(p.numel() for p in model.parameters())
    assert dist.count_parameters()["total"] == sum(p.numel() for p in dist.parameters())
    # The detector's state dict (what is exported) holds none of the distillation parameters.
    model_tensors = {id(t) for t in model.state_dict(keep_vars=True).values()}
    assert not any(id(p) in model_tensors for p in dist.parameters())
    assert sum(p.numel() for p in model.parameters()) == n_model


def test_mad_targets_the_head_inputs_whatever_the_tap_set():
    """Eq 6's F is the map the head reads: under pan_to_fpn the students are FPN maps, not F."""
    from detectors import build_detector

    torch.manual_seed(0)
    model = build_detector("yolov5n", num_classes=3, taps="pan_to_fpn").train()
    dist = build_distillation(losses_cfg(mssd__enabled=False), model)
    assert {s: a[0].out_channels for s, a in ((int(k), v) for k, v in dist.mad.adapters.items())} \
        == model.head_input_channels
    out = model(torch.rand(2, 3, IMG, IMG))
    assert any(out.students[s].shape != out.head_inputs[s].shape for s in (8, 16, 32))
    levels = []
    for s in (8, 16, 32):
        f = out.head_inputs[s]
        mask = gaussian_mask(*targets_to_boxes(TARGETS, IMG), 2, f.shape[-2:], s, 2.0)
        levels.append(((dist.mad.adapters[str(s)](mask) - f) ** 2).mean())
    torch.testing.assert_close(dist(out, TARGETS, IMG)["mask"], sum(levels) / 3)
