"""Eq 6: mask-assisted detection, the pure loss and the module with adaptation layers."""

import math

import pytest
import torch
from torch import nn

from losses.combine import combine_losses
from losses.gaussian_mask import gaussian_mask
from losses.mask_loss import MaskAssistedLoss, mask_loss


def test_mask_loss_matches_hand_worked_value():
    # Level 8: diff 1 everywhere -> 1; level 16: diffs [2, 0] -> (4 + 0) / 2 = 2. Mean over levels 1.5.
    adapted = {8: torch.ones(1, 2, 2, 2), 16: torch.tensor([2.0, 0.0]).reshape(1, 2, 1, 1)}
    features = {8: torch.zeros(1, 2, 2, 2), 16: torch.zeros(1, 2, 1, 1)}
    assert mask_loss(adapted, features).item() == pytest.approx(1.5)


def test_mask_loss_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same strides"):
        mask_loss({8: torch.zeros(1, 1, 1, 1)}, {16: torch.zeros(1, 1, 1, 1)})
    with pytest.raises(ValueError, match="stride 8"):
        mask_loss({8: torch.zeros(1, 1, 1, 1)}, {8: torch.zeros(1, 2, 1, 1)})


def identity_adapters(module):
    """Set every adapter to copy the mask into each channel: weight 1 at the kernel centre, bias 0."""
    with torch.no_grad():
        for seq in module.adapters.values():
            conv = seq[0]
            conv.weight.zero_()
            k = conv.kernel_size[0] // 2
            conv.weight[:, :, k, k] = 1.0
            conv.bias.zero_()


def test_module_loss_matches_hand_worked_mask():
    # One 16 x 16 box on a 2 x 2 map at stride 8: every cell has u, v = +-0.5, mask exp(-0.5 / sigma2).
    module = MaskAssistedLoss({8: 3}, sigma2=2.0, kernel_size=1)
    identity_adapters(module)
    features = {8: torch.zeros(1, 3, 2, 2)}
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    loss = module(features, boxes, torch.zeros(1, dtype=torch.long))["mask"]
    assert loss.item() == pytest.approx(math.exp(-0.25) ** 2)
    # F equal to the adapted mask gives zero loss.
    features = {8: torch.full((1, 3, 2, 2), math.exp(-0.25))}
    assert module(features, boxes, torch.zeros(1, dtype=torch.long))["mask"].item() == pytest.approx(0.0, abs=1e-12)


# PyTorch warns that an even kernel with padding "same" pads a copy of the input: a speed note only.
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kernel", [1, 2, 3, 5])
def test_adapter_keeps_the_feature_map_shape(kernel):
    module = MaskAssistedLoss({8: 4, 16: 8}, kernel_size=kernel)
    assert module.adapters["16"][0].kernel_size == (kernel, kernel)
    assert isinstance(module.adapters["16"][1], nn.ReLU)
    features = {8: torch.randn(2, 4, 5, 6), 16: torch.randn(2, 8, 3, 3)}
    masks = module.masks(features, torch.tensor([[0.0, 0.0, 20.0, 20.0]]), torch.tensor([1]))
    assert masks[8].shape == (2, 1, 5, 6) and masks[16].shape == (2, 1, 3, 3)
    adapted = module.adapters["8"](masks[8])
    assert adapted.shape == features[8].shape and (adapted >= 0).all()


def test_module_builds_the_eq5_mask_at_each_stride():
    module = MaskAssistedLoss({8: 1, 16: 1}, sigma2=4.0)
    features = {8: torch.zeros(2, 1, 4, 4), 16: torch.zeros(2, 1, 2, 2)}
    boxes, index = torch.tensor([[2.0, 3.0, 25.0, 30.0]]), torch.tensor([1])
    masks = module.masks(features, boxes, index)
    for s, size in ((8, (4, 4)), (16, (2, 2))):
        torch.testing.assert_close(masks[s], gaussian_mask(boxes, index, 2, size, s, 4.0))


def test_adapters_and_features_get_gradients():
    torch.manual_seed(0)
    module = MaskAssistedLoss({8: 4, 16: 4}, sigma2=2.0)
    features = {8: torch.randn(2, 4, 4, 4, requires_grad=True), 16: torch.randn(2, 4, 2, 2, requires_grad=True)}
    boxes = torch.tensor([[0.0, 0.0, 24.0, 24.0], [8.0, 8.0, 32.0, 32.0]])
    module(features, boxes, torch.tensor([0, 1]))["mask"].backward()
    for s in (8, 16):
        assert features[s].grad is not None and features[s].grad.abs().sum() > 0
        assert module.adapters[str(s)][0].weight.grad.abs().sum() > 0


def test_combine_losses_is_eq_7_times_the_batch_size():
    gt, distill, mask = torch.tensor(1.5), torch.tensor(0.2), torch.tensor(0.4)
    assert combine_losses(gt, distill, mask).item() == pytest.approx(2.1)
    total = combine_losses(gt, distill, mask, lambda_distill=2.0, lambda_mask=0.5, batch_size=8)
    assert total.item() == pytest.approx(8 * (1.5 + 0.4 + 0.2))
    assert combine_losses(gt, 0.0, 0.0, batch_size=4).item() == pytest.approx(6.0)
