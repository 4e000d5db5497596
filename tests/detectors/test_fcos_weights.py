"""Loading FCOS weights: torchvision's state dicts, class-count changes, MMDetection's names, refusals."""

from __future__ import annotations

import re

import pytest
import torch

from detectors.fcos.model import FCOS
from detectors.fcos.weights import load_weights, mmdet_to_ours
from detectors.weights import WeightsError


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    model = FCOS("fcos_tiny", 3)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_mean", "bias")):
                tensor.normal_(0, 0.1)
    return model


def test_a_state_dict_loads_every_tensor_and_reproduces_the_outputs(tmp_path, source):
    path = tmp_path / "fcos_tiny.pth"
    torch.save(source.state_dict(), path)
    model = FCOS("fcos_tiny", 3)
    report = load_weights(model, path)
    assert report.source == "state_dict" and not report.skipped and not report.unexpected
    assert len(report.loaded) == 319
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.eval()(x).head, source.eval()(x).head, strict=True))


def test_a_class_count_change_skips_only_cls_logits(tmp_path, source):
    path = tmp_path / "coco.pth"
    torch.save(FCOS("fcos_tiny", 91).state_dict(), path)
    model = FCOS("fcos_tiny", 3)
    prior = model.head.classification_head.cls_logits.bias.detach().clone()
    report = load_weights(model, path)
    assert report.skipped == ["head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias"]
    assert torch.equal(model.head.classification_head.cls_logits.bias, prior)  # keeps -log((1 - 0.01) / 0.01)
    assert "skipped (class count differs): head.classification_head.cls_logits.weight" in report.summary()


def test_weights_of_another_width_name_the_file_and_the_first_mismatching_tensor(tmp_path):
    path = tmp_path / "full.pth"
    # fcos_resnet50_fpn's shapes (4 x the width), as zeros of the same rank
    wide = {k: torch.zeros(v.shape[0] * 4, *v.shape[1:]) for k, v in FCOS("fcos_tiny", 3).state_dict().items()}
    torch.save({"model": wide}, path)
    with pytest.raises(WeightsError, match=r"full\.pth: backbone\.body\.conv1\.weight has shape \(64, 3, 7, 7\) "
                                           r"in the file, expected \(16, 3, 7, 7\)"):
        load_weights(FCOS("fcos_tiny", 3), path)


def test_weights_of_another_detector_are_refused_naming_the_first_missing_tensor(tmp_path):
    path = tmp_path / "yolox.pth"
    torch.save({"backbone.backbone.stem.conv.conv.weight": torch.zeros(16, 12, 3, 3)}, path)
    with pytest.raises(WeightsError, match=r"yolox\.pth: 319 tensors of this model are missing from the file, "
                                           r"first 'backbone\.body\.conv1\.weight'; expected weights of fcos_tiny"):
        load_weights(FCOS("fcos_tiny", 3), path)


def mmdet_fcos_state_dict(model: FCOS, num_classes: int) -> dict[str, torch.Tensor]:
    """A synthetic MMDetection 2.x FCOS checkpoint's state dict (ResNet + FPN + GN FCOSHead), its names
    written from MMDetection's module layout (``mmdet/models/{backbones/resnet,necks/fpn,dense_heads/fcos_head}.py``)
    and its shapes from the model's widths."""
    sd = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():  # the ResNet: same names under "backbone.", BatchNorm with its counter
        if key.startswith("backbone.body."):
            name = "backbone." + key[len("backbone.body."):]
            out[name] = torch.randn(value.shape)
            if name.endswith("running_var"):
                out[name] = out[name].abs() + 0.5
                out[name.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    c = model.backbone.out_channels
    for i, cin in enumerate(model.backbone.in_channels_list):
        out[f"neck.lateral_convs.{i}.conv.weight"] = torch.randn(c, cin, 1, 1)
        out[f"neck.lateral_convs.{i}.conv.bias"] = torch.randn(c)
    for i in range(5):
        out[f"neck.fpn_convs.{i}.conv.weight"] = torch.randn(c, c, 3, 3)
        out[f"neck.fpn_convs.{i}.conv.bias"] = torch.randn(c)
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            out[f"bbox_head.{tower}.{i}.conv.weight"] = torch.randn(c, c, 3, 3) * 0.01
            out[f"bbox_head.{tower}.{i}.gn.weight"] = torch.rand(c) + 0.5
            out[f"bbox_head.{tower}.{i}.gn.bias"] = torch.randn(c)
    for name, n in (("conv_cls", num_classes), ("conv_reg", 4), ("conv_centerness", 1)):
        out[f"bbox_head.{name}.weight"] = torch.randn(n, c, 3, 3) * 0.01
        out[f"bbox_head.{name}.bias"] = torch.randn(n)
    for i in range(5):
        out[f"bbox_head.scales.{i}.scale"] = torch.tensor(1.0 + i / 10)
    return out


def test_mmdetection_checkpoints_load_into_the_mmdet2_layout_by_name(tmp_path):
    model = FCOS("fcos_tiny", 80, style="mmdet2")
    state = mmdet_fcos_state_dict(model, 80)
    path = tmp_path / "fcos_r50_caffe_fpn_gn-head_1x_coco.pth"
    torch.save({"meta": {"epoch": 12, "CLASSES": ["person"] * 80}, "state_dict": state, "optimizer": {}}, path)
    report = load_weights(model, path)
    assert not report.skipped and not report.unexpected and len(report.loaded) == len(model.state_dict())
    ours = model.state_dict()
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(ours[mmdet_to_ours(key)], value), key
    assert mmdet_to_ours("bbox_head.reg_convs.3.gn.bias") == "head.regression_head.conv.10.bias"
    assert mmdet_to_ours("neck.fpn_convs.4.conv.weight") == "backbone.fpn.extra_blocks.p7.weight"
    # into 3 classes: conv_cls skipped; into the torchvision layout: refused, naming the first tensor it lacks
    three = load_weights(FCOS("fcos_tiny", 3, style="mmdet2"), path)
    assert three.skipped == ["head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias"]
    with pytest.raises(WeightsError, match=re.escape("missing from the file, first "
                                                     "'head.classification_head.conv.0.bias'")):
        load_weights(FCOS("fcos_tiny", 80), path)


def test_an_imagenet_resnet_checkpoint_goes_into_the_body_only(tmp_path):
    model = FCOS("fcos_tiny", 3)
    resnet = {k[len("backbone.body."):]: torch.randn(v.shape) for k, v in model.state_dict().items()
              if k.startswith("backbone.body.")}
    resnet.update({"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)})
    path = tmp_path / "resnet50-11ad3fa6.pth"
    torch.save(resnet, path)
    head_before = model.head.classification_head.conv[0].weight.detach().clone()
    report = load_weights(model, path)
    assert report.skipped == ["fc.weight", "fc.bias"] and len(report.loaded) == len(resnet) - 2
    assert torch.equal(model.backbone.body.layer4[2].conv3.weight, resnet["layer4.2.conv3.weight"])
    assert torch.equal(model.head.classification_head.conv[0].weight, head_before)
