"""ConvNeXt backbone (detectors/backbones/convnext.py) and yolov5s_convnext: layout, maths, weight loading.

Parity with the official code and timm on real ConvNeXt-T weights layouts is benchmarks/verify_convnext_parity.py;
here: hand-checkable pieces, the published key layout, and the loader on synthetic state dicts.
"""

from __future__ import annotations

import re

import pytest
import torch

from detectors.backbones.convnext import ConvNeXt, DropPath, LayerNorm2d, build_convnext
from detectors.backbones.convnext_weights import load_convnext_backbone, timm_to_official
from detectors.weights import WeightsError
from detectors.zoo import build_detector, family_of

TINY = {"depths": (1, 1, 2, 1), "dims": (8, 16, 24, 32)}


def official_keys(depths, dims, *, classifier: bool) -> list[str]:
    """The official models/convnext.py state-dict keys, written out from its module layout."""
    keys = ["downsample_layers.0.0.weight", "downsample_layers.0.0.bias",
            "downsample_layers.0.1.weight", "downsample_layers.0.1.bias"]
    for i in range(1, 4):
        keys += [f"downsample_layers.{i}.{j}.{p}" for j in (0, 1) for p in ("weight", "bias")]
    for s, depth in enumerate(depths):
        for b in range(depth):
            keys += [f"stages.{s}.{b}.gamma"] + [f"stages.{s}.{b}.{m}.{p}" for m in
                                                  ("dwconv", "norm", "pwconv1", "pwconv2") for p in ("weight", "bias")]
    return keys + (["norm.weight", "norm.bias", "head.weight", "head.bias"] if classifier else [])


def to_timm(key: str) -> str:
    """timm's own official -> timm renaming (timm.models.convnext.checkpoint_filter_fn), as the oracle."""
    key = key.replace("downsample_layers.0.", "stem.")
    key = re.sub(r"stages.([0-9]+).([0-9]+)", r"stages.\1.blocks.\2", key)
    key = re.sub(r"downsample_layers.([0-9]+).([0-9]+)", r"stages.\1.downsample.\2", key)
    key = key.replace("dwconv", "conv_dw").replace("pwconv", "mlp.fc").replace("head.", "head.fc.")
    return key.replace("norm", "head.norm", 1) if key.startswith("norm.") else key


def classification_state(backbone: ConvNeXt, seed: int) -> dict[str, torch.Tensor]:
    """An ImageNet-checkpoint-like state dict for ``backbone``'s size: random trunk, norm.* and head.*."""
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=g) for k, v in backbone.state_dict().items()
             if not re.match(r"norm\d\.", k)}
    c = backbone.dims[-1]
    state.update({"norm.weight": torch.ones(c), "norm.bias": torch.zeros(c),
                  "head.weight": torch.randn(1000, c, generator=g), "head.bias": torch.zeros(1000)})
    return state


def small_detector() -> torch.nn.Module:
    """YOLOv5n's neck and head on a narrow ConvNeXt: the same hook and loader as yolov5s_convnext, cheaply."""
    return build_detector("yolov5n", num_classes=3, backbone=ConvNeXt(**TINY))


def test_convnext_tiny_has_the_official_keys_and_size():
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        model = build_convnext("convnext_tiny")
    keys = list(model.state_dict())
    expected = official_keys((3, 3, 9, 3), (96, 192, 384, 768), classifier=False)
    out_norms = [f"norm{s}.{p}" for s in (1, 2, 3) for p in ("weight", "bias")]
    assert keys == expected + out_norms
    # ConvNeXt-T is 28,589,128 parameters with its classifier (head 768 * 1000 + 1000, final norm 2 * 768);
    # the out-norms add 2 * (192 + 384 + 768).
    assert sum(p.numel() for p in model.parameters()) == 28_589_128 - 769_000 - 1_536 + 2 * (192 + 384 + 768)
    assert model.out_channels == {8: 192, 16: 384, 32: 768}
    assert ConvNeXt(**TINY).stages[2][0].gamma.eq(1e-6).all()  # layer scale starts at 1e-6
    assert model.stages[0][0].pwconv1.weight.shape == (384, 96)  # Linear, as their checkpoints store it


def test_layernorm2d_normalises_over_channels_like_the_official_channels_first_formula():
    norm = LayerNorm2d(5, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 6.0))
        norm.bias.copy_(torch.full((5,), 0.5))
    x = torch.randn(2, 5, 3, 4)
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    expected = norm.weight[:, None, None] * (x - u) / torch.sqrt(s + 1e-6) + norm.bias[:, None, None]
    torch.testing.assert_close(norm(x), expected, rtol=1e-5, atol=1e-5)


def test_drop_path_drops_whole_samples_and_rescales_the_kept_ones():
    drop = DropPath(0.5).train()
    torch.manual_seed(0)
    y = drop(torch.ones(64, 2, 3, 3))
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()  # one draw per sample
    x = torch.randn(4, 2, 3, 3)
    assert torch.equal(drop.eval()(x), x)


def test_forward_gives_strides_8_16_32_and_normalises_images_inside():
    model = ConvNeXt(**TINY).eval()
    images = torch.rand(2, 3, 64, 96)
    outs = model(images)
    assert [tuple(o.shape) for o in outs] == [(2, 16, 8, 12), (2, 24, 4, 6), (2, 32, 2, 3)]
    # ImageNet mean/std applied in forward: the stem sees (x - mean) / std.
    stem = model.downsample_layers[0]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = model.stages[0](stem((images - mean) / std))
    x = model.stages[1](model.downsample_layers[1](x))
    torch.testing.assert_close(outs[0], model.norm1(x))
    assert not any(k.startswith("pixel_") for k in model.state_dict())


def test_yolov5s_convnext_feeds_the_yolov5s_neck_through_1x1_convs_and_keeps_its_keys():
    model = build_detector("yolov5s_convnext", num_classes=3)
    plain = build_detector("yolov5s", num_classes=3)
    neck_head = [k for k in plain.state_dict() if int(k.split(".")[1]) >= 10]
    state = model.state_dict()
    assert [k for k in state if k.startswith("model.")] == neck_head
    assert all(state[k].shape == plain.state_dict()[k].shape for k in neck_head)
    assert [(p.conv.in_channels, p.conv.out_channels, p.conv.kernel_size) for p in model.backbone_proj] == [
        (192, 128, (1, 1)), (384, 256, (1, 1)), (768, 512, (1, 1))]
    assert model.tap_channels == plain.tap_channels and model.head_input_channels == plain.head_input_channels
    assert isinstance(model.backbone, ConvNeXt) and model.backbone.depths == (3, 3, 9, 3)


def test_a_convnext_backbone_runs_through_the_yolov5_neck_and_head_in_both_modes():
    model = small_detector()
    plain = build_detector("yolov5n", num_classes=3)
    assert model.tap_channels == plain.tap_channels
    out = model.train()(torch.rand(2, 3, 64, 96))
    assert [tuple(h.shape) for h in out.head] == [(2, 3, 8, 12, 8), (2, 3, 4, 6, 8), (2, 3, 2, 3, 8)]
    assert {s: t.shape[1] for s, t in out.teachers.items()} == {s: c for s, (c, _) in model.tap_channels.items()}
    assert {s: t.shape[1] for s, t in out.head_inputs.items()} == model.head_input_channels
    detections = model.eval().predict(torch.rand(1, 3, 64, 64), conf=0.0, iou=0.5, max_det=5)
    assert len(detections) == 1 and detections[0].boxes.shape[1] == 4


def test_official_checkpoint_loads_into_the_backbone_and_drops_the_classifier(tmp_path):
    model = small_detector()
    neck_before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("model.")}
    state = classification_state(model.backbone, seed=1)
    path = tmp_path / "convnext_tiny_1k_224_ema.pth"
    torch.save({"model": state, "epoch": 299}, path)
    report = family_of("yolov5n").load_weights(model, path)
    assert report.unexpected == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    loaded = model.backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if not k.startswith(("norm.", "head.")))
    assert len(report.loaded) == len(state) - 4
    assert "backbone.norm3.weight" in report.initialised and "model.24.m.0.weight" in report.initialised
    assert all(torch.equal(model.state_dict()[k], v) for k, v in neck_before.items())
    assert "dropped (classifier" in report.summary() and "head.weight" in report.summary()


def test_timm_names_map_to_the_official_ones():
    backbone = ConvNeXt(**TINY)
    official = classification_state(backbone, seed=2)
    timm = {to_timm(k): v for k, v in official.items()}
    assert "stem.0.weight" in timm and "stages.2.blocks.1.mlp.fc2.bias" in timm and "head.fc.weight" in timm
    assert "stages.3.downsample.1.weight" in timm and "head.norm.bias" in timm
    mapped = timm_to_official(timm)
    assert mapped.keys() == official.keys()
    assert all(mapped[k] is official[k] for k in official)
    # timm's conv_mlp variant stores the MLP as 1x1 convs: (O, I, 1, 1) becomes the Linear's (O, I).
    conv = timm_to_official({"stages.0.blocks.0.mlp.fc1.weight": torch.zeros(32, 8, 1, 1)})
    assert conv["stages.0.0.pwconv1.weight"].shape == (32, 8)


def test_timm_state_dict_loads_through_the_detector_loader(tmp_path):
    model = small_detector()
    official = classification_state(model.backbone, seed=3)
    path = tmp_path / "timm_convnext_tiny.pth"
    torch.save({to_timm(k): v for k, v in official.items()}, path)
    report = family_of("yolov5n").load_weights(model, path)
    assert "timm names" in report.source
    assert torch.equal(model.backbone.stages[2][1].pwconv2.weight, official["stages.2.1.pwconv2.weight"])
    assert torch.equal(model.backbone.downsample_layers[0][1].bias, official["downsample_layers.0.1.bias"])


def test_other_convnext_sizes_and_wrong_shapes_are_errors_naming_file_and_key(tmp_path):
    backbone = ConvNeXt(**TINY)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    deeper = classification_state(ConvNeXt(depths=(1, 1, 3, 1), dims=TINY["dims"]), seed=4)
    with pytest.raises(WeightsError, match=r"small\.pth: stages\.2\.2\.gamma is not a tensor of this ConvNeXt"):
        load_convnext_backbone(backbone, deeper, "small.pth")
    wider = classification_state(ConvNeXt(depths=TINY["depths"], dims=(8, 16, 24, 40)), seed=5)
    with pytest.raises(WeightsError, match=r"base\.pth: downsample_layers\.3\.1\.weight has shape"):
        load_convnext_backbone(backbone, wider, "base.pth")
    partial = classification_state(backbone, seed=6)
    del partial["stages.1.0.gamma"]
    with pytest.raises(WeightsError, match=r"cut\.pth: stages\.1\.0\.gamma missing from the file"):
        load_convnext_backbone(backbone, partial, "cut.pth")
    assert all(torch.equal(v, before[k]) for k, v in backbone.state_dict().items())  # refused: nothing changed


def test_our_own_detector_weights_with_a_convnext_backbone_round_trip(tmp_path):
    torch.manual_seed(0)
    source = small_detector()
    path = tmp_path / "state.pt"
    torch.save(source.state_dict(), path)
    torch.manual_seed(1)
    target = small_detector()
    family_of("yolov5n").load_weights(target, path)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())
