"""The `losses` switches of issue 15 wired from the config: validated, flattened, each acting on its term."""

import contextlib

import pytest
import torch
from torch import nn

from detectors.config import flatten_config, parse_config
from detectors.distillation import build_distillation, head_maps_by_stride
from detectors.errors import ConfigError
from losses.gaussian_mask import gaussian_mask

SMALL_TAPS = {8: (4, 4), 16: (6, 6), 32: (5, 8)}
IMG = 64
TARGETS = torch.tensor([[0, 1, 24 / IMG, 24 / IMG, 32 / IMG, 16 / IMG], [1, 0, 48 / IMG, 40 / IMG, 0.25, 0.25]])
BOXES = torch.tensor([[8.0, 16.0, 40.0, 32.0], [40.0, 32.0, 56.0, 48.0]])


class TappedModel(nn.Module):
    strides = (8, 16, 32)

    def __init__(self, tap_channels=SMALL_TAPS):
        super().__init__()
        self.tap_channels = dict(tap_channels)


def losses(**sections):
    return parse_config({"losses": sections}).losses


def output(batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    teachers = {s: torch.randn(batch, ct, IMG // s, IMG // s, generator=g).requires_grad_()
                for s, (ct, _) in SMALL_TAPS.items()}
    students = {s: torch.randn(batch, cs, IMG // s, IMG // s, generator=g).requires_grad_()
                for s, (_, cs) in SMALL_TAPS.items()}
    return {"teachers": teachers, "students": students}


def built(seed=0, **sections):
    torch.manual_seed(seed)
    return build_distillation(losses(**sections), TappedModel())


SWITCHES = {  # switch -> the terms it may change
    "mssd.detach=student": ({"mssd": {"detach": "student"}}, set()),  # values equal, gradients differ
    "mssd.channel_matching=project_teacher": ({"mssd": {"channel_matching": "project_teacher"}},
                                              {"distill", "distill_l"}),
    "mssd.channel_matching=shared_adapter": ({"mssd": {"channel_matching": "shared_adapter"}},
                                             {"distill", "distill_s", "distill_m", "distill_l"}),
    "mssd.normalise=channel_standardise": ({"mssd": {"normalise": "channel_standardise"}},
                                           {"distill", "distill_s", "distill_m", "distill_l"}),
    "mad.coordinates=pixels": ({"mad": {"coordinates": "pixels"}}, {"mask"}),
    "mad.mask_stride=1": ({"mad": {"mask_stride": 1}}, {"mask"}),
    "mad.adapter_relu=false": ({"mad": {"adapter_relu": False}}, {"mask"}),
    "scale=unscaled_terms": ({"scale": "unscaled_terms"}, set()),
    "warmup": ({"warmup": {"zero_epochs": 1, "ramp_epochs": 2}}, set()),
}


def share_weights(source, target):
    """Copy the projector/adapter weights a switch leaves shaped alike, so only the switch differs."""
    for part in ("mssd", "mad"):
        # A switch that reshapes a part (e.g. a projector on the other side) keeps its own weights.
        with contextlib.suppress(RuntimeError):
            getattr(target, part).load_state_dict(getattr(source, part).state_dict())


@pytest.mark.parametrize("name", list(SWITCHES))
def test_each_switch_changes_only_the_terms_it_names(name):
    sections, changed = SWITCHES[name]
    default, switched_module = built(), built(**sections)
    share_weights(default, switched_module)
    if name == "mad.adapter_relu=false":  # make the ReLU matter: adapters with negative outputs
        with torch.no_grad():
            for module in (default, switched_module):
                for seq in module.mad.adapters.values():
                    seq[0].bias.fill_(-0.5)
    reference = default(output(), TARGETS, IMG)
    switched = switched_module(output(), TARGETS, IMG)
    for term, value in reference.items():
        if term in changed:
            assert not torch.allclose(switched[term], value), f"{name} should change {term}"
        else:
            torch.testing.assert_close(switched[term], value, msg=f"{name} changed {term}")


def test_defaults_are_todays_reading_and_every_switch_is_a_flat_param():
    flat = flatten_config(parse_config({}))
    comparators = ("gt", "kd", "fgfi", "defeat", "lgd")  # the comparators' blocks: tests/detectors/test_comparators*
    assert {k: flat[k] for k in flat if k.startswith("losses.") and k.split(".")[1] not in comparators} == {
        "losses.method": "mssd", "losses.mssd.enabled": True, "losses.mssd.gamma": 0.05, "losses.mssd.w_m": 1.0, "losses.mssd.w_l": 1.0,
        "losses.mssd.detach_teacher": True, "losses.mssd.detach": None,
        "losses.mssd.channel_matching": "project_student", "losses.mssd.normalise": "none",
        "losses.mad.enabled": True, "losses.mad.sigma2": 2.0, "losses.mad.adapter_kernel": 3,
        "losses.mad.adapter_relu": True, "losses.mad.target": "detect_input",
        "losses.mad.coordinates": "box_normalised", "losses.mad.mask_stride": None,
        "losses.lambda_distill": 0.1, "losses.lambda_mask": 0.1, "losses.scale": "unscaled_terms",
        "losses.warmup.zero_epochs": 0, "losses.warmup.ramp_epochs": 0,
    }
    dist = built()
    assert (dist.scale, dist.mad_target, dist.weight_factor()) == ("unscaled_terms", "detect_input", 1.0)
    assert (dist.lambda_distill, dist.lambda_mask) == (0.1, 0.1)  # docs/findings.md
    assert (dist.mssd.detach, dist.mssd.channel_matching, dist.mssd.normalise) == (
        "teacher", "project_student", "none")
    assert (dist.mad.coordinates, dist.mad.mask_stride) == ("box_normalised", None)


@pytest.mark.parametrize(("section", "key", "value"), [
    ("mssd", "detach", "both"), ("mssd", "channel_matching", "project_both"), ("mssd", "normalise", "l2"),
    ("mad", "target", "head"), ("mad", "coordinates", "cells"), ("mad", "mask_stride", 0),
])
def test_bad_switch_values_name_the_key(section, key, value):
    with pytest.raises(ConfigError, match=f"losses.{section}.{key}: expected"):
        losses(**{section: {key: value}})
    with pytest.raises(ConfigError, match="losses.scale: expected one of batch, unscaled_terms"):
        losses(scale="mean")
    with pytest.raises(ConfigError, match="losses.warmup.ramp_epochs"):
        losses(warmup={"ramp_epochs": -1})


def test_mask_stride_must_divide_every_level():
    with pytest.raises(ConfigError, match="losses.mad.mask_stride: expected a divisor"):
        build_distillation(losses(mad={"mask_stride": 3}), TappedModel())


def test_unscaled_terms_backpropagate_one_batchth_of_the_distillation_part():
    batch = 4
    grads = {}
    for scale in ("batch", "unscaled_terms"):
        dist = built(scale=scale)
        out = output(batch=batch)
        gt_total = torch.tensor(3.0, requires_grad=True)
        terms = dist(out, torch.cat([TARGETS, TARGETS + torch.tensor([2, 0, 0, 0, 0, 0])]), IMG)
        total = dist.total_loss(gt_total, terms, batch)
        distill_part = total - gt_total
        total.backward()
        grads[scale] = (distill_part.item(), gt_total.grad.item(), out["students"][8].grad.clone())
    assert grads["unscaled_terms"][0] == pytest.approx(grads["batch"][0] / batch)
    assert grads["unscaled_terms"][1] == grads["batch"][1] == 1.0  # L_gt's own gradient is untouched
    torch.testing.assert_close(grads["unscaled_terms"][2], grads["batch"][2] / batch)


def test_detach_student_sends_the_gradient_to_the_teacher_only():
    dist = built(mssd={"detach": "student"}, mad={"enabled": False})
    out = output()
    dist.total_loss(torch.tensor(0.0), dist(out, TARGETS, IMG), 2).backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in out["teachers"].values())
    assert all(s.grad is None for s in out["students"].values())
    # The legacy flag still works when detach is not set, and detach wins over it when set.
    assert built(mssd={"detach_teacher": False}).mssd.detach == "none"
    assert built(mssd={"detach_teacher": True, "detach": "student"}).mssd.detach == "student"


def test_detach_none_has_the_gradients_of_both_directions_summed():
    """FPN -> PAN plus PAN -> FPN (teacher detached + student detached) equals one undetached loss."""
    def grads(detach):
        dist = built(mssd={"detach": detach}, mad={"enabled": False})  # same seed: same projector
        out = output()
        dist(out, TARGETS, IMG)["distill"].backward()
        return [t.grad if t.grad is not None else torch.zeros_like(t)
                for t in [*out["teachers"].values(), *out["students"].values()]]

    both = [a + b for a, b in zip(grads("teacher"), grads("student"), strict=True)]
    for got, want in zip(grads("none"), both, strict=True):
        torch.testing.assert_close(got, want)


def test_warmup_gives_zero_then_ramps_the_distillation_weights():
    dist = built(warmup={"zero_epochs": 2, "ramp_epochs": 2}, scale="batch", lambda_distill=1.0, lambda_mask=1.0)
    terms = dist(output(), TARGETS, IMG)
    gt_total = torch.tensor(3.0)
    full = 2 * (terms["distill"] + terms["mask"]).item()
    seen = []
    for epoch in (1, 2, 3, 4, 5):
        dist.start_epoch(epoch, 5)
        seen.append(dist.total_loss(gt_total, terms, 2).item() - 3.0)
    assert seen == pytest.approx([0.0, 0.0, full / 2, full, full], abs=1e-6)


def test_warmup_reaches_the_trainer(tmp_path):
    from detectors.engine.trainer import fit

    cfg = parse_config({
        "detector": {"name": "yolov5n"},
        "data": {"format": "synthetic", "root": str(tmp_path / "data"), "img_size": 64, "workers": 0,
                 "synthetic": {"images": 6, "seed": 0, "width": 256, "height": 96}},
        "losses": {"warmup": {"zero_epochs": 1}},
        "train": {"epochs": 2, "batch_size": 4, "warmup_epochs": 0, "device": "cpu", "max_steps_per_epoch": 1,
                  "eval_interval": 2},
        "eval": {"max_det": 10},
    })
    history = []

    class Keep:
        def after_epoch(self, trainer, epoch, metrics):
            history.append(metrics)

    fit(cfg, tmp_path / "run", callbacks=[Keep()])
    first, second = history
    assert first["loss/distill"] > 0 and first["loss/mask"] > 0
    assert first["loss/total"] == pytest.approx(first["loss/gt"], rel=1e-5)  # epoch 1: weights 0
    assert second["loss/total"] > second["loss/gt"] * (1 + 1e-3)  # epoch 2: full weights


@pytest.mark.parametrize(("target", "channels"), [("head_objectness", 3), ("head_all", 3 * 8)])
def test_mad_target_on_the_heads_output_maps(target, channels):
    from detectors import build_detector

    torch.manual_seed(0)
    model = build_detector("yolov5n", num_classes=3).train()
    dist = build_distillation(losses(mad={"target": target}, mssd={"enabled": False}), model)
    assert model.training  # the channel probe restored the mode
    assert {s: dist.mad.adapters[str(s)][0].out_channels for s in (8, 16, 32)} == dict.fromkeys((8, 16, 32), channels)
    out = model(torch.rand(2, 3, IMG, IMG))
    head = out.head if hasattr(out, "head") else out.head_maps
    levels = []
    for s, level in zip((8, 16, 32), head, strict=True):
        f = level[..., 4] if target == "head_objectness" else level.permute(0, 1, 4, 2, 3).reshape(2, -1, *level.shape[2:4])
        mask = gaussian_mask(BOXES, torch.tensor([0, 1]), 2, f.shape[-2:], s, 2.0)
        levels.append(((dist.mad.adapters[str(s)](mask) - f) ** 2).mean())
    terms = dist(out, TARGETS, IMG)
    torch.testing.assert_close(terms["mask"], sum(levels) / 3)
    terms["mask"].backward()
    assert all(p.grad is not None for p in model.detect.parameters())  # F is the head's output now


def test_head_maps_in_the_channels_first_layout():
    head = [torch.randn(2, 8, 8 // k, 8 // k) for k in (1, 2, 4)]
    maps = head_maps_by_stride(head, (8, 16, 32), "head_objectness")
    torch.testing.assert_close(maps[16], head[1][:, 4:5])
    assert head_maps_by_stride(head, (8, 16, 32), "head_all")[32] is head[2]
    with pytest.raises(ConfigError, match="one map per stride"):
        head_maps_by_stride(head[:2], (8, 16, 32), "head_all")
