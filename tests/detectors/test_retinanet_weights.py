"""Loading RetinaNet weights: torchvision's state dicts, class-count changes, MMDetection's names, refusals."""

from __future__ import annotations

import re

import pytest
import torch

from detectors.retinanet.model import RetinaNet
from detectors.retinanet.weights import load_weights, mmdet_to_ours
from detectors.weights import WeightsError

CLS_LOGITS = ["head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias"]


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    model = RetinaNet("retinanet_tiny", 3)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("running_mean", "bias")):
                tensor.normal_(0, 0.1)
    return model


def test_a_state_dict_loads_every_tensor_and_a_class_change_skips_only_cls_logits(tmp_path, source):
    path = tmp_path / "retinanet_tiny.pth"
    torch.save(source.state_dict(), path)
    model = RetinaNet("retinanet_tiny", 3)
    report = load_weights(model, path)
    assert report.source == "state_dict" and not report.skipped and len(report.loaded) == 301
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.state_dict().items())
    coco = RetinaNet("retinanet_tiny", 91)
    prior = coco.head.classification_head.cls_logits.bias.detach().clone()
    changed = load_weights(coco, path)
    assert changed.skipped == CLS_LOGITS and len(changed.loaded) == 299
    assert torch.equal(coco.head.classification_head.cls_logits.bias, prior)  # keeps the 0.01 prior
    assert "skipped (class count differs): head.classification_head.cls_logits.weight" in changed.summary()


def test_bad_weights_name_the_file_and_the_first_mismatching_tensor(tmp_path):
    wide = {k: torch.zeros(v.shape[0] * 4, *v.shape[1:]) for k, v in RetinaNet("retinanet_tiny", 3).state_dict().items()}
    torch.save({"model": wide}, tmp_path / "full.pth")
    with pytest.raises(WeightsError, match=r"full\.pth: backbone\.body\.conv1\.weight has shape \(64, 3, 7, 7\) "
                                           r"in the file, expected \(16, 3, 7, 7\)"):
        load_weights(RetinaNet("retinanet_tiny", 3), tmp_path / "full.pth")
    torch.save({"backbone.backbone.stem.conv.conv.weight": torch.zeros(16, 12, 3, 3)}, tmp_path / "yolox.pth")
    with pytest.raises(WeightsError, match=r"yolox\.pth: 301 tensors of this model are missing from the file, "
                                           r"first 'backbone\.body\.conv1\.weight'; expected weights of retinanet_tiny"):
        load_weights(RetinaNet("retinanet_tiny", 3), tmp_path / "yolox.pth")


def mmdet_retinanet_state_dict(model: RetinaNet, num_classes: int) -> dict[str, torch.Tensor]:
    """A synthetic MMDetection 2.x RetinaNet checkpoint's state dict (ResNet + FPN with P6 from C5 + RetinaHead),
    names written from MMDetection's module layout (``mmdet/models/{backbones/resnet,necks/fpn,
    dense_heads/retina_head}.py``: ``ConvModule``'s ``.conv``, ``retina_cls``, ``retina_reg``), shapes from the
    model's widths."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():  # the ResNet: same names under "backbone.", BN with its counter
        if key.startswith("backbone.body."):
            name = "backbone." + key[len("backbone.body."):]
            out[name] = torch.randn(value.shape)
            if name.endswith("running_var"):
                out[name] = out[name].abs() + 0.5
                out[name.replace("running_var", "num_batches_tracked")] = torch.tensor(0)
    c = model.backbone.out_channels
    c5 = model.backbone.in_channels_list[-1]
    for i, cin in enumerate(model.backbone.in_channels_list):
        out[f"neck.lateral_convs.{i}.conv.weight"] = torch.randn(c, cin, 1, 1)
        out[f"neck.lateral_convs.{i}.conv.bias"] = torch.randn(c)
    for i, cin in enumerate((c, c, c, c5, c)):  # fpn_convs 3 (P6) reads C5: add_extra_convs='on_input'
        out[f"neck.fpn_convs.{i}.conv.weight"] = torch.randn(c, cin, 3, 3)
        out[f"neck.fpn_convs.{i}.conv.bias"] = torch.randn(c)
    for tower in ("cls_convs", "reg_convs"):
        for i in range(4):
            out[f"bbox_head.{tower}.{i}.conv.weight"] = torch.randn(c, c, 3, 3) * 0.01
            out[f"bbox_head.{tower}.{i}.conv.bias"] = torch.randn(c)
    for name, n in (("retina_cls", 9 * num_classes), ("retina_reg", 9 * 4)):
        out[f"bbox_head.{name}.weight"] = torch.randn(n, c, 3, 3) * 0.01
        out[f"bbox_head.{name}.bias"] = torch.randn(n)
    return out


def test_mmdetection_checkpoints_load_into_the_mmdet2_layout_by_name(tmp_path):
    model = RetinaNet("retinanet_tiny", 80, style="mmdet2")
    state = mmdet_retinanet_state_dict(model, 80)
    path = tmp_path / "retinanet_r50_fpn_1x_coco.pth"
    torch.save({"meta": {"epoch": 12, "CLASSES": ["person"] * 80}, "state_dict": state, "optimizer": {}}, path)
    report = load_weights(model, path)
    assert not report.skipped and not report.unexpected and len(report.loaded) == len(model.state_dict())
    ours = model.state_dict()
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(ours[mmdet_to_ours(key)], value), key
    assert mmdet_to_ours("bbox_head.cls_convs.3.conv.bias") == "head.classification_head.conv.3.0.bias"
    assert mmdet_to_ours("bbox_head.retina_reg.weight") == "head.regression_head.bbox_reg.weight"
    assert mmdet_to_ours("neck.fpn_convs.3.conv.weight") == "backbone.fpn.extra_blocks.p6.weight"
    three = load_weights(RetinaNet("retinanet_tiny", 3, style="mmdet2"), path)
    assert three.skipped == CLS_LOGITS
    # into the torchvision layout (P6 from P5): refused at the first tensor whose shape differs
    with pytest.raises(WeightsError, match=re.escape("backbone.fpn.extra_blocks.p6.weight has shape (64, 512, 3, 3) "
                                                     "in the file, expected (64, 64, 3, 3)")):
        load_weights(RetinaNet("retinanet_tiny", 80), path)


def test_an_imagenet_resnet_checkpoint_goes_into_the_body_only(tmp_path):
    model = RetinaNet("retinanet_tiny", 3)
    resnet = {k[len("backbone.body."):]: torch.randn(v.shape) for k, v in model.state_dict().items()
              if k.startswith("backbone.body.")}
    resnet.update({"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)})
    torch.save(resnet, tmp_path / "resnet50-11ad3fa6.pth")
    head_before = model.head.classification_head.conv[0][0].weight.detach().clone()
    report = load_weights(model, tmp_path / "resnet50-11ad3fa6.pth")
    assert report.skipped == ["fc.weight", "fc.bias"] and len(report.loaded) == len(resnet) - 2
    assert torch.equal(model.backbone.body.layer4[2].conv3.weight, resnet["layer4.2.conv3.weight"])
    assert torch.equal(model.head.classification_head.conv[0][0].weight, head_before)
