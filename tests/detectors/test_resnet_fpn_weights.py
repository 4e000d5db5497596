"""Weights for the ResNet-FPN parts: ImageNet resnet50 into the body, strict detector checkpoints with the
class-count exception, and MMDetection's ResNet/FPN names (synthetic state dicts in the published layouts)."""

from __future__ import annotations

import argparse
import re

import pytest
import torch
from torch import nn

from detectors.backbones.resnet import resnet50
from detectors.backbones.resnet_fpn import resnet_fpn_backbone
from detectors.backbones.resnet_weights import (
    is_mmdet_state,
    load_detector_checkpoint,
    load_imagenet_resnet50,
    mmdet_resnet_fpn_key,
    rename_keys,
)
from detectors.necks.fpn import LastLevelMaxPool, LastLevelP6P7
from detectors.weights import WeightsError


def imagenet_state(base_width: int = 16) -> dict[str, torch.Tensor]:
    """torchvision's ImageNet resnet50 layout: BatchNorm2d (with num_batches_tracked) and the fc classifier."""
    torch.manual_seed(0)
    net = resnet50(base_width=base_width, norm_layer=nn.BatchNorm2d)
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    return {**state, "fc.weight": torch.randn(1000, 32 * base_width), "fc.bias": torch.randn(1000)}


def test_imagenet_resnet50_loads_into_the_body_reporting_the_classifier(tmp_path):
    path = tmp_path / "resnet50.pth"
    state = imagenet_state()
    torch.save(state, path)
    body = resnet50(base_width=16)
    report = load_imagenet_resnet50(body, path)
    assert report.skipped == ["fc.weight", "fc.bias"] and len(report.loaded) == len(body.state_dict())
    assert torch.equal(body.layer3[5].bn2.running_var,
                       state["layer3.5.bn2.running_var"])
    assert torch.equal(body.conv1.weight, state["conv1.weight"])


def test_imagenet_weights_into_a_body_without_layer4_report_its_tensors(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(imagenet_state(), path)
    report = load_imagenet_resnet50(resnet50(base_width=16, num_stages=3), path)
    assert "layer4.0.conv1.weight" in report.skipped and "fc.bias" in report.skipped


def test_imagenet_weights_of_another_width_name_the_file_and_first_tensor(tmp_path):
    path = tmp_path / "wide.pth"
    torch.save(imagenet_state(base_width=8), path)
    with pytest.raises(WeightsError, match=r"wide\.pth: conv1\.weight has shape \(8, 3, 7, 7\)"):
        load_imagenet_resnet50(resnet50(base_width=16), path)


def test_imagenet_checkpoint_with_pickled_options_goes_through_the_restricted_reader(tmp_path):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": imagenet_state(), "args": argparse.Namespace(lr=0.1)}, path)
    report = load_imagenet_resnet50(resnet50(base_width=16), path)
    assert report.source == "checkpoint" and report.skipped == ["fc.weight", "fc.bias"]


class TinyDetector(nn.Module):
    """A torchvision-style detector: ``backbone`` (ResNet-FPN) and a head with a class-dependent conv."""

    def __init__(self, num_classes: int, fpn_channels: int = 8) -> None:
        super().__init__()
        self.backbone = resnet_fpn_backbone(base_width=16, fpn_channels=fpn_channels,
                                            extra_blocks=LastLevelP6P7(fpn_channels, fpn_channels))
        self.head = nn.ModuleDict({"cls_logits": nn.Conv2d(fpn_channels, num_classes, 3, padding=1),
                                   "bbox_reg": nn.Conv2d(fpn_channels, 4, 3, padding=1)})


CLASS_KEYS = re.compile(r"^head\.cls_logits\.(weight|bias)$")


def load(model: nn.Module, path) -> object:
    return load_detector_checkpoint(model, path, class_dependent=CLASS_KEYS, expected="a TinyDetector checkpoint")


def test_detector_checkpoint_loads_strictly_and_skips_the_class_layer_on_a_class_change(tmp_path):
    source = TinyDetector(5)
    path = tmp_path / "det.pth"
    torch.save(source.state_dict(), path)
    same = TinyDetector(5)
    assert load(same, path).skipped == []
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), source.state_dict().values(), strict=True))
    other = TinyDetector(3)
    before = other.head.cls_logits.weight.clone()
    report = load(other, path)
    assert report.skipped == ["head.cls_logits.weight", "head.cls_logits.bias"]
    assert torch.equal(other.head.cls_logits.weight, before)
    assert torch.equal(other.head.bbox_reg.weight, source.head.bbox_reg.weight)
    assert "skipped (class count differs): head.cls_logits.weight" in report.summary()


def test_detector_checkpoint_of_another_family_or_width_is_one_line_naming_the_tensor(tmp_path):
    path = tmp_path / "other.pth"
    extra = {**TinyDetector(3).state_dict(), "head.bbox_ctrness.weight": torch.zeros(1)}
    torch.save(extra, path)
    with pytest.raises(WeightsError, match=r"other\.pth: 1 tensors of the file are not in this model, first "
                                           r"'head\.bbox_ctrness\.weight'") as err:
        load(TinyDetector(3), path)
    assert "\n" not in str(err.value)
    missing = {k: v for k, v in TinyDetector(3).state_dict().items() if not k.startswith("head.bbox_reg")}
    torch.save(missing, path)
    with pytest.raises(WeightsError, match=r"missing from the file, first 'head\.bbox_reg\.weight'"):
        load(TinyDetector(3), path)
    torch.save(TinyDetector(3, fpn_channels=16).state_dict(), path)
    with pytest.raises(WeightsError, match=r"backbone\.fpn\.inner_blocks\.0\.0\.weight has shape \(16, 128, 1, 1\)"):
        load(TinyDetector(3), path)


def test_batchnorm_counters_of_a_trained_from_scratch_checkpoint_are_dropped(tmp_path):
    state = TinyDetector(3).state_dict()
    state["backbone.body.bn1.num_batches_tracked"] = torch.tensor(7)
    torch.save(state, tmp_path / "bn.pth")
    assert "backbone.body.bn1.num_batches_tracked" not in load(TinyDetector(3), tmp_path / "bn.pth").loaded


class ConvModule(nn.Module):
    """MMDetection/mmcv's ConvModule without norm: the conv is the ``conv`` attribute."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2)


def mmdet_resnet_fpn_state(in_channels: list[int], out: int, extra_convs: int, extra_in: int) -> dict:
    """A state dict in MMDetection's layout: ``backbone`` (their ResNet: torchvision's names, BatchNorm)
    and ``neck`` (FPN: lateral_convs / fpn_convs ConvModules, then the extra stride-2 convs)."""
    neck = nn.Module()
    neck.lateral_convs = nn.ModuleList(ConvModule(c, out, 1) for c in in_channels)
    neck.fpn_convs = nn.ModuleList([ConvModule(out, out, 3) for _ in in_channels]
                                   + [ConvModule(extra_in if i == 0 else out, out, 3, 2) for i in range(extra_convs)])
    model = nn.Module()
    model.backbone = resnet50(base_width=16, norm_layer=nn.BatchNorm2d)
    model.neck = neck
    torch.manual_seed(1)
    return {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in model.state_dict().items()}


@pytest.mark.parametrize("extra_in", [8, 512])  # P6 from P5 ('on_output', FCOS) or from C5 ('on_input')
def test_mmdet_retinanet_fcos_layout_maps_onto_backbone_body_and_fpn(extra_in):
    state = mmdet_resnet_fpn_state([128, 256, 512], 8, extra_convs=2, extra_in=extra_in)
    assert is_mmdet_state(state)
    ours = rename_keys(state, [lambda k: mmdet_resnet_fpn_key(k, fpn_levels=3)])
    model = nn.Module()
    model.backbone = resnet_fpn_backbone(base_width=16, fpn_channels=8, extra_blocks=LastLevelP6P7(extra_in, 8))
    model.load_state_dict(ours, strict=True)
    assert torch.equal(model.backbone.fpn.inner_blocks[0][0].weight, state["neck.lateral_convs.0.conv.weight"])
    assert torch.equal(model.backbone.fpn.layer_blocks[2][0].bias, state["neck.fpn_convs.2.conv.bias"])
    assert torch.equal(model.backbone.fpn.extra_blocks.p6.weight, state["neck.fpn_convs.3.conv.weight"])
    assert torch.equal(model.backbone.fpn.extra_blocks.p7.weight, state["neck.fpn_convs.4.conv.weight"])
    assert torch.equal(model.backbone.body.layer4[2].bn3.running_mean, state["backbone.layer4.2.bn3.running_mean"])


def test_mmdet_faster_rcnn_layout_has_four_levels_and_no_extra_tensors():
    state = mmdet_resnet_fpn_state([64, 128, 256, 512], 8, extra_convs=0, extra_in=8)
    ours = rename_keys(state, [lambda k: mmdet_resnet_fpn_key(k, fpn_levels=4)])
    model = nn.Module()
    model.backbone = resnet_fpn_backbone(base_width=16, fpn_channels=8, returned_layers=(1, 2, 3, 4),
                                         extra_blocks=LastLevelMaxPool())
    model.load_state_dict(ours, strict=True)
    assert torch.equal(model.backbone.fpn.layer_blocks[3][0].weight, state["neck.fpn_convs.3.conv.weight"])


def test_mmdet_keys_outside_backbone_and_neck_are_left_for_the_family():
    assert mmdet_resnet_fpn_key("bbox_head.conv_cls.weight") is None
    assert mmdet_resnet_fpn_key("neck.fpn_convs.5.conv.weight", fpn_levels=3) is None
    renamed = rename_keys({"bbox_head.conv_cls.weight": torch.zeros(1), "backbone.conv1.weight": torch.zeros(1)},
                          [mmdet_resnet_fpn_key, lambda k: "head.cls_logits.weight" if k.startswith("bbox_head") else None])
    assert list(renamed) == ["head.cls_logits.weight", "backbone.body.conv1.weight"]


def test_a_file_mixing_both_layouts_is_refused_naming_both_keys():
    state = {"backbone.body.conv1.weight": torch.zeros(1), "backbone.conv1.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match=r"mixed\.pth: 'backbone\.body\.conv1\.weight' and 'backbone\.conv1\.weight'"):
        rename_keys(state, [mmdet_resnet_fpn_key], path="mixed.pth")
