"""ResNet-50 / FPN shared parts: torchvision's names and formulas on hand-worked tiny cases.

Parity with torchvision itself at real sizes is benchmarks/verify_resnet_fpn_parity.py.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detectors.backbones.resnet import Bottleneck, FrozenBatchNorm2d, resnet50
from detectors.backbones.resnet_fpn import freeze_resnet_layers, resnet_fpn_backbone
from detectors.necks.fpn import FeaturePyramidNetwork, LastLevelMaxPool, LastLevelP6P7


def test_frozen_batchnorm_applies_fixed_statistics_and_affine():
    bn = FrozenBatchNorm2d(2, eps=0.0)
    bn.weight.copy_(torch.tensor([2.0, 1.0]))
    bn.bias.copy_(torch.tensor([1.0, -1.0]))
    bn.running_mean.copy_(torch.tensor([3.0, 0.0]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0]))
    x = torch.tensor([5.0, 7.0]).reshape(1, 2, 1, 1)
    # (5 - 3) / 2 * 2 + 1 = 3 ; (7 - 0) / 1 * 1 - 1 = 6
    assert bn(x).flatten().tolist() == [3.0, 6.0]
    assert list(bn.parameters()) == []


def test_frozen_batchnorm_loads_a_batchnorm2d_state_dict_dropping_its_counter():
    source = nn.BatchNorm2d(3)
    source.running_mean.fill_(0.5)
    bn = FrozenBatchNorm2d(3)
    bn.load_state_dict(source.state_dict(), strict=True)  # has num_batches_tracked
    assert sorted(bn.state_dict()) == ["bias", "running_mean", "running_var", "weight"]
    assert torch.equal(bn.running_mean, torch.full((3,), 0.5))


def test_bottleneck_puts_the_stride_on_the_3x3_conv():
    down = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), FrozenBatchNorm2d(16))
    block = Bottleneck(8, 4, stride=2, downsample=down)
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2) and block.conv3.out_channels == 16
    assert block(torch.rand(1, 8, 6, 6)).shape == (1, 16, 3, 3)


def test_narrow_resnet50_has_torchvision_names_block_counts_and_stage_shapes():
    net = resnet50(base_width=16)
    keys = net.state_dict().keys()
    assert "conv1.weight" in keys and "bn1.running_var" in keys and "fc.weight" not in keys
    assert "layer1.0.downsample.0.weight" in keys and "layer1.0.downsample.1.running_mean" in keys
    assert "layer3.5.conv3.weight" in keys and "layer3.6.conv1.weight" not in keys  # 3, 4, 6, 3 blocks
    assert "layer4.2.bn3.weight" in keys and "layer2.1.downsample.0.weight" not in keys
    assert net.stage_channels == [64, 128, 256, 512] and net.stage_strides == [4, 8, 16, 32]
    shapes = [tuple(t.shape) for t in net(torch.rand(1, 3, 64, 32))]
    assert shapes == [(1, 64, 16, 8), (1, 128, 8, 4), (1, 256, 4, 2), (1, 512, 2, 1)]
    # ResNet-50 proper: 23.5 M parameters without the classifier (25.557 M - 2048 * 1000 - 1000)
    # torchvision counts BN affine terms as parameters; FrozenBatchNorm2d holds them as buffers.
    real = resnet50(norm_layer=nn.BatchNorm2d)
    assert sum(p.numel() for p in real.parameters()) == 25_557_032 - 2_049_000


def _identity_fpn(in_channels: list[int], extra=None) -> FeaturePyramidNetwork:
    """FPN with 1 channel: laterals sum their input channels, output convs are the identity."""
    fpn = FeaturePyramidNetwork(in_channels, 1, extra)
    with torch.no_grad():
        for inner in fpn.inner_blocks:
            inner[0].weight.fill_(1.0)
            inner[0].bias.zero_()
        for layer in fpn.layer_blocks:
            layer[0].weight.zero_()
            layer[0].weight[0, 0, 1, 1] = 1.0
            layer[0].bias.fill_(0.5)
    return fpn


def test_fpn_merges_top_down_by_nearest_upsampling_before_the_output_conv():
    fpn = _identity_fpn([1, 1], LastLevelMaxPool())
    c3 = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]]).reshape(1, 1, 2, 4)
    c4 = torch.tensor([10.0, 20.0]).reshape(1, 1, 1, 2)
    outputs, merged = fpn([c3, c4])
    expected_p3 = [[11.0, 12.0, 23.0, 24.0], [15.0, 16.0, 27.0, 28.0]]
    assert merged[0][0, 0].tolist() == expected_p3 and merged[1][0, 0].tolist() == [[10.0, 20.0]]
    assert outputs[0][0, 0].tolist() == [[v + 0.5 for v in row] for row in expected_p3]
    assert outputs[1][0, 0].tolist() == [[10.5, 20.5]]
    assert outputs[2][0, 0].tolist() == [[10.5]]  # max-pool kernel 1 stride 2 = subsampling
    assert len(outputs) == 3 and len(merged) == 2


def test_fpn_keys_are_torchvision_names():
    fpn = FeaturePyramidNetwork([8, 16], 4, LastLevelP6P7(4, 4))
    assert list(fpn.state_dict()) == [
        "inner_blocks.0.0.weight", "inner_blocks.0.0.bias", "inner_blocks.1.0.weight", "inner_blocks.1.0.bias",
        "layer_blocks.0.0.weight", "layer_blocks.0.0.bias", "layer_blocks.1.0.weight", "layer_blocks.1.0.bias",
        "extra_blocks.p6.weight", "extra_blocks.p6.bias", "extra_blocks.p7.weight", "extra_blocks.p7.bias",
    ]


@pytest.mark.parametrize("in_channels, uses_p5", [(1, True), (3, False)])
def test_p6p7_reads_p5_when_channels_match_else_c5(in_channels, uses_p5):
    extra = LastLevelP6P7(in_channels, 1)
    with torch.no_grad():
        for conv in (extra.p6, extra.p7):
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = 1.0  # centre tap: stride-2 subsampling (summed over input channels)
            conv.bias.zero_()
        extra.p7.bias.fill_(0.25)
    p5 = torch.arange(16.0).reshape(1, 1, 4, 4) - 8  # negative values: P7 sees relu(P6)
    c5 = torch.ones(1, 3, 4, 4)
    p6, p7 = extra([p5], [c5])
    assert extra.use_P5 is uses_p5
    expected_p6 = [[-8.0, -6.0], [0.0, 2.0]] if uses_p5 else [[3.0, 3.0], [3.0, 3.0]]
    assert p6[0, 0].tolist() == expected_p6
    assert p7[0, 0].tolist() == [[max(expected_p6[0][0], 0.0) + 0.25]]


def test_backbone_returns_outputs_and_merged_maps_keyed_by_stride():
    net = resnet_fpn_backbone(base_width=16, fpn_channels=8, extra_blocks=LastLevelP6P7(8, 8))
    maps = net(torch.rand(1, 3, 128, 64))
    assert net.strides == (8, 16, 32, 64, 128) and net.merged_strides == (8, 16, 32)
    assert {s: tuple(t.shape) for s, t in maps.outputs.items()} == {
        8: (1, 8, 16, 8), 16: (1, 8, 8, 4), 32: (1, 8, 4, 2), 64: (1, 8, 2, 1), 128: (1, 8, 1, 1)}
    assert list(maps.merged) == [8, 16, 32]
    for i, s in enumerate(net.merged_strides):  # outputs = 3x3 output conv of the merged map
        assert torch.allclose(net.fpn.layer_blocks[i](maps.merged[s]), maps.outputs[s])
    keys = net.state_dict().keys()
    assert "body.layer4.2.conv3.weight" in keys and "fpn.inner_blocks.2.0.weight" in keys
    assert net.fpn.inner_blocks[0][0].in_channels == 128  # layer2 of the narrow ResNet


def test_default_extra_level_is_maxpool_and_layers_after_the_last_returned_stage_are_dropped():
    net = resnet_fpn_backbone(base_width=16, fpn_channels=8, returned_layers=(1, 2, 3))
    assert net.strides == (4, 8, 16, 32) and isinstance(net.fpn.extra_blocks, LastLevelMaxPool)
    assert not hasattr(net.body, "layer4")


def _trainable_prefixes(trainable_layers: int) -> set[str]:
    net = resnet_fpn_backbone(base_width=16, fpn_channels=8, trainable_layers=trainable_layers,
                              norm_layer=nn.BatchNorm2d)
    return {n.split(".")[1] for n, p in net.named_parameters() if p.requires_grad and n.startswith("body.")}


@pytest.mark.parametrize("layers, trainable", [
    (0, set()),
    (3, {"layer2", "layer3", "layer4"}),
    (4, {"layer1", "layer2", "layer3", "layer4"}),
    (5, {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4"}),
])
def test_trainable_layers_freeze_as_torchvision(layers, trainable):
    assert _trainable_prefixes(layers) == trainable


def test_fpn_stays_trainable_and_bad_trainable_layers_are_refused():
    net = resnet_fpn_backbone(base_width=16, fpn_channels=8, trainable_layers=0)
    assert all(p.requires_grad for p in net.fpn.parameters())
    with pytest.raises(ValueError, match="trainable_layers"):
        freeze_resnet_layers(net.body, 6)
    with torch.no_grad():
        assert math.isfinite(float(net(torch.rand(1, 3, 64, 64)).outputs[64].sum()))


def test_caffe_style_strides_on_the_1x1_conv_with_the_same_keys():
    pytorch, caffe = resnet50(base_width=16), resnet50(base_width=16, style="caffe")
    assert list(pytorch.state_dict()) == list(caffe.state_dict())
    assert caffe.layer2[0].conv1.stride == (2, 2) and caffe.layer2[0].conv2.stride == (1, 1)
    assert caffe.layer1[0].conv1.stride == (1, 1) and caffe.layer2[1].conv1.stride == (1, 1)
    with pytest.raises(ValueError, match="style"):
        resnet50(style="tf")
