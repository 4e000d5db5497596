"""Faster R-CNN and Cascade R-CNN: torchvision's keys, the RoI sampling and loss on hand-checkable cases,
predict's output, and weights (torchvision layout, MMDetection's Cascade R-CNN layout, bad files).

Parity at real sizes with torchvision's own model (FPN maps, detections, loss items) is
benchmarks/verify_rcnn_parity.py's job; these tests use the tiny sizes."""

from __future__ import annotations

import math

import pytest
import torch

from detectors.api import Detections
from detectors.ops.box_coder import BoxCoder
from detectors.ops.matcher import Matcher
from detectors.ops.sampler import BalancedPositiveNegativeSampler
from detectors.rcnn.loss import RCNNLoss, targets_to_boxes
from detectors.rcnn.model import TwoStageDetector
from detectors.rcnn.roi_loss import fastrcnn_loss
from detectors.rcnn.roi_sampling import sample_rois
from detectors.rcnn.weights import load_weights
from detectors.weights import WeightsError

TARGETS = torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.5], [1, 0, 0.3, 0.3, 0.3, 0.3], [1, 2, 0.7, 0.6, 0.3, 0.5]])


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return {name: TwoStageDetector(name, 3) for name in ("fasterrcnn_tiny", "cascadercnn_tiny")}


def test_faster_rcnn_has_torchvision_keys_and_shapes_for_k_plus_one_classes():
    # torchvision 0.29.1 (and 0.26): FasterRCNN(_resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3),
    # num_classes=4) has 295 tensors and 41,309,411 parameters.
    model = TwoStageDetector("fasterrcnn_resnet50_fpn", 3)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(shapes) == 295 and sum(p.numel() for p in model.parameters()) == 41_309_411
    assert not any(k.endswith("num_batches_tracked") for k in shapes)
    assert shapes["backbone.fpn.inner_blocks.0.0.weight"] == (256, 256, 1, 1)  # layer1 is returned
    assert shapes["rpn.head.conv.0.0.weight"] == (256, 256, 3, 3)
    assert shapes["rpn.head.bbox_pred.weight"] == (12, 256, 1, 1)
    assert shapes["roi_heads.box_head.fc6.weight"] == (1024, 256 * 7 * 7)
    assert shapes["roi_heads.box_predictor.cls_score.weight"] == (4, 1024)
    assert shapes["roi_heads.box_predictor.bbox_pred.weight"] == (16, 1024)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("backbone.body.conv1", "backbone.body.layer1")) for n in frozen)


def test_cascade_rcnn_has_three_heads_with_class_agnostic_regressors(tiny):
    shapes = {k: tuple(v.shape) for k, v in tiny["cascadercnn_tiny"].state_dict().items()}
    for stage in range(3):
        assert shapes[f"roi_heads.box_head.{stage}.fc7.weight"] == (256, 256)
        assert shapes[f"roi_heads.box_predictor.{stage}.cls_score.weight"] == (4, 256)
        assert shapes[f"roi_heads.box_predictor.{stage}.bbox_pred.weight"] == (4, 256)
    assert not any(k.startswith("roi_heads.box_head.3") for k in shapes)
    faster = set(tiny["fasterrcnn_tiny"].state_dict())
    assert {k for k in shapes if not k.startswith("roi_heads")} == {k for k in faster if not k.startswith("roi_heads")}


def test_fastrcnn_loss_is_mean_cross_entropy_and_smooth_l1_of_the_positives_own_class_over_all_rois():
    logits = torch.zeros(3, 3)  # 3 RoIs, background + 2 classes: uniform probabilities
    deltas = torch.zeros(3, 12)
    deltas[0, 8:12] = torch.tensor([0.5, 0.05, 0.0, -2.0])  # RoI 0, class 2's slot
    deltas[0, 4:8] = 9.0  # another class's slot: ignored
    deltas[2, 0:4] = 9.0  # a background RoI: no box loss
    labels = torch.tensor([2, 0, 0])
    cls, box = fastrcnn_loss(logits, deltas, [labels], [torch.zeros(3, 4)])
    beta = 1 / 9  # smooth L1: 0.5 x^2 / beta below beta, |x| - 0.5 beta above
    per_coordinate = [0.5 - beta / 2, 0.5 * 0.05**2 / beta, 0.0, 2.0 - beta / 2]
    assert cls.item() == pytest.approx(math.log(3))
    assert box.item() == pytest.approx(sum(per_coordinate) / 3)
    _, agnostic = fastrcnn_loss(logits, deltas[:, 8:12], labels, torch.zeros(3, 4), beta=1.0)
    assert agnostic.item() == pytest.approx((0.5 * 0.5**2 + 0.5 * 0.05**2 + 0 + 2.0 - 0.5) / 3)  # beta 1


def test_rois_are_matched_with_the_ground_truth_appended_and_labelled_by_iou():
    gt = [torch.tensor([[0.0, 0.0, 10.0, 10.0]])]
    proposals = [torch.tensor([[0.0, 0.0, 10.0, 6.0],  # IoU 0.6 with the object
                               [0.0, 0.0, 10.0, 3.0]])]  # IoU 0.3
    sampler = BalancedPositiveNegativeSampler(512, 0.25)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    samples = sample_rois(proposals, gt, [torch.tensor([2])], matcher=Matcher(0.5, 0.5, False), sampler=sampler,
                          box_coder=coder)
    order = torch.argsort(samples.proposals[0][:, 3])  # by height: the 0.3 one, the 0.6 one, the object
    assert samples.labels[0][order].tolist() == [0, 2, 2]
    assert samples.is_gt[0][order].tolist() == [False, False, True]
    assert torch.allclose(samples.regression_targets[0][order[2]], torch.zeros(4))  # the object itself
    # dy = 10 (centre 5 vs 3) / 6 * 10 (weight): the 0.6 proposal's target
    assert samples.regression_targets[0][order[1]][1].item() == pytest.approx(2 / 6 * 10)
    at_07 = sample_rois(proposals, gt, [torch.tensor([2])], matcher=Matcher(0.7, 0.7, False), sampler=sampler,
                        box_coder=coder)
    assert sorted(at_07.labels[0].tolist()) == [0, 0, 2]  # Cascade's last stage: only the object itself


def test_loader_targets_become_pixel_boxes_and_labels_shifted_past_the_background():
    boxes, labels = targets_to_boxes(TARGETS, 2, (100, 200))
    assert torch.allclose(boxes[0], torch.tensor([[60.0, 25.0, 140.0, 75.0]]))
    assert labels[0].tolist() == [2] and labels[1].tolist() == [1, 3]


@pytest.mark.parametrize("name", ["fasterrcnn_tiny", "cascadercnn_tiny"])
def test_the_loss_runs_the_roi_heads_and_predict_gives_classes_0_to_k_minus_1(tiny, name):
    model = tiny[name].train()
    torch.manual_seed(0)
    output = model(torch.rand(2, 3, 64, 128))
    assert output.head.predictions is None and len(output.head.proposals) == 2
    assert sorted(output.teachers) == sorted(output.students) == [4, 8, 16, 32]
    assert sorted(output.head_inputs) == list(model.strides) == [4, 8, 16, 32, 64]
    assert output.teachers[4].shape == output.students[4].shape == (2, 64, 16, 32)
    total, items = RCNNLoss(model)(output, TARGETS)
    assert set(items) == {"rpn_obj", "rpn_box", "cls", "box"} and all(torch.isfinite(v) for v in items.values())
    assert total.item() == pytest.approx(sum(v.item() for v in items.values()), rel=1e-6)
    model.zero_grad()
    total.backward()
    fc6 = model.roi_heads.box_head[0].fc6 if model.cascade else model.roi_heads.box_head.fc6
    assert fc6.weight.grad is not None and fc6.weight.grad.abs().sum() > 0
    detections = model.predict(torch.rand(2, 3, 64, 64), conf=0.0, iou=0.5, max_det=20)
    assert model.training  # predict ran in eval mode and restored the caller's mode
    assert len(detections) == 2 and all(isinstance(d, Detections) and 0 < len(d) <= 20 for d in detections)
    for boxes, scores, classes in detections:
        assert boxes.shape[1] == 4 and (boxes[:, 2:] >= boxes[:, :2]).all() and (boxes >= 0).all()
        assert (boxes <= 64).all() and bool((scores[:-1] >= scores[1:]).all())
        assert classes.dtype == torch.int64 and ((classes >= 0) & (classes < 3)).all()


def test_cascade_stage_losses_are_weighted_one_half_quarter_and_later_stages_sample_refined_rois(tiny):
    model = tiny["cascadercnn_tiny"].train()
    torch.manual_seed(1)
    output = model(torch.rand(2, 3, 64, 128))
    _, items = RCNNLoss(model)(output, TARGETS)
    stages = model.roi_heads.last_stage_losses
    assert len(stages) == 3
    assert items["cls"].item() == pytest.approx(sum(w * c.item() for w, (c, _) in zip((1, 0.5, 0.25), stages, strict=True)))
    assert items["box"].item() == pytest.approx(sum(w * b.item() for w, (_, b) in zip((1, 0.5, 0.25), stages, strict=True)))
    first, second = model.roi_heads.last_samples[:2]
    # stage 2 samples among stage 1's sampled RoIs (ground truth dropped) moved by its regression, plus the
    # ground truth again (the tiny sizes sample 128 RoIs per image)
    assert all(len(p) <= 128 for p in first.proposals + second.proposals) and not torch.equal(first.proposals[0], second.proposals[0])


def test_torchvision_layout_loads_strictly_and_a_class_change_skips_only_the_predictor(tiny, tmp_path):
    source = TwoStageDetector("fasterrcnn_tiny", 5)
    path = tmp_path / "tv.pth"
    torch.save(source.state_dict(), path)
    model = TwoStageDetector("fasterrcnn_tiny", 3)
    report = load_weights(model, path)
    assert sorted(report.skipped) == ["roi_heads.box_predictor.bbox_pred.bias", "roi_heads.box_predictor.bbox_pred.weight",
                                      "roi_heads.box_predictor.cls_score.bias", "roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(model.roi_heads.box_head.fc6.weight, source.roi_heads.box_head.fc6.weight)
    state = source.state_dict()
    state["rpn.head.conv.0.0.weight"] = state["rpn.head.conv.0.0.weight"][:, :8]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"tv\.pth: rpn\.head\.conv\.0\.0\.weight has shape"):
        load_weights(model, path)
    del state["rpn.head.conv.0.0.weight"]
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"tv\.pth: 1 tensors .* missing .* 'rpn\.head\.conv\.0\.0\.weight'"):
        load_weights(model, path)
    torch.save({**source.state_dict(), "roi_heads.mask_head.weight": torch.zeros(1)}, path)
    with pytest.raises(WeightsError, match=r"not in this model, first 'roi_heads\.mask_head\.weight'"):
        load_weights(model, path)


def _mmdet_layout(model: TwoStageDetector) -> dict[str, torch.Tensor]:
    """A synthetic MMDetection Cascade R-CNN state dict with their published names (configs/_base_/models/
    cascade_rcnn_r50_fpn.py: ResNet ``backbone.*`` with BatchNorm counters, FPN ``neck.lateral_convs/fpn_convs.
    <i>.conv``, ``rpn_head.rpn_conv/rpn_cls/rpn_reg``, ``roi_head.bbox_head.<t>.shared_fcs.<0|1>/fc_cls/fc_reg``)."""
    g = torch.Generator().manual_seed(3)
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        rand = torch.randn(value.shape, generator=g)
        if key.startswith("backbone.body."):
            name = "backbone." + key[len("backbone.body."):]
            out[name] = rand.abs() + 0.5 if name.endswith("running_var") else rand
            if name.endswith(".running_var"):
                out[name.replace("running_var", "num_batches_tracked")] = torch.tensor(7)
    for i in range(4):
        for p in ("weight", "bias"):
            out[f"neck.lateral_convs.{i}.conv.{p}"] = torch.randn(model.state_dict()[f"backbone.fpn.inner_blocks.{i}.0.{p}"].shape, generator=g)
            out[f"neck.fpn_convs.{i}.conv.{p}"] = torch.randn(model.state_dict()[f"backbone.fpn.layer_blocks.{i}.0.{p}"].shape, generator=g)
    for ours, theirs in (("conv.0.0", "rpn_conv"), ("cls_logits", "rpn_cls"), ("bbox_pred", "rpn_reg")):
        for p in ("weight", "bias"):
            out[f"rpn_head.{theirs}.{p}"] = torch.randn(model.state_dict()[f"rpn.head.{ours}.{p}"].shape, generator=g)
    c, rep = 64 * 49, 256
    for t in range(3):
        for theirs, shape in (("shared_fcs.0", (rep, c)), ("shared_fcs.1", (rep, rep)), ("fc_cls", (4, rep)),
                              ("fc_reg", (4, rep))):
            out[f"roi_head.bbox_head.{t}.{theirs}.weight"] = torch.randn(shape, generator=g)
            out[f"roi_head.bbox_head.{t}.{theirs}.bias"] = torch.randn(shape[0], generator=g)
    return out


def test_mmdetection_cascade_checkpoints_import_through_the_key_map(tmp_path):
    model = TwoStageDetector("cascadercnn_tiny", 3)
    theirs = _mmdet_layout(model)
    path = tmp_path / "cascade_rcnn_r50_fpn_1x_coco.pth"
    torch.save({"meta": {"epoch": 12, "CLASSES": ["a", "b", "c"]}, "state_dict": theirs}, path)
    report = load_weights(model, path)
    assert report.source == "mmdetection" and not report.skipped and len(report.loaded) == len(model.state_dict())
    sd = model.state_dict()
    assert torch.equal(sd["backbone.body.layer2.0.bn1.running_var"], theirs["backbone.layer2.0.bn1.running_var"])
    assert torch.equal(sd["backbone.fpn.layer_blocks.3.0.bias"], theirs["neck.fpn_convs.3.conv.bias"])
    assert torch.equal(sd["rpn.head.conv.0.0.weight"], theirs["rpn_head.rpn_conv.weight"])
    assert torch.equal(sd["roi_heads.box_head.2.fc7.weight"], theirs["roi_head.bbox_head.2.shared_fcs.1.weight"])
    # background: MMDetection's last class row, our first
    cls = theirs["roi_head.bbox_head.1.fc_cls.weight"]
    assert torch.equal(sd["roi_heads.box_predictor.1.cls_score.weight"], torch.cat((cls[3:], cls[:3])))
    # deltas: theirs x std x our weight: 1 for stage 1, (0.99, 0.99, 1.005, 1.005) for stage 3
    assert torch.equal(sd["roi_heads.box_predictor.0.bbox_pred.bias"], theirs["roi_head.bbox_head.0.fc_reg.bias"])
    factor = torch.tensor([0.033 * 30, 0.033 * 30, 0.067 * 15, 0.067 * 15])
    assert torch.allclose(sd["roi_heads.box_predictor.2.bbox_pred.bias"], theirs["roi_head.bbox_head.2.fc_reg.bias"] * factor)
    torch.save({"state_dict": {**theirs, "roi_head.mask_head.0.conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(WeightsError, match=r"cascade_rcnn_r50_fpn_1x_coco\.pth: 1 tensors .* not in this model, "
                                           r"first 'roi_head\.mask_head\.0\.conv\.weight'"):
        load_weights(model, path)
    with pytest.raises(WeightsError, match="only Cascade R-CNN"):
        load_weights(TwoStageDetector("fasterrcnn_tiny", 3), path)


@torch.no_grad()
def test_cascade_inference_averages_the_stages_logits_and_takes_the_last_stages_box(tiny):
    model = tiny["cascadercnn_tiny"].eval()
    heads = model.roi_heads
    biases = ([0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0])
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        for stage, bias in enumerate(biases):
            predictor = heads.box_predictor[stage]
            predictor.cls_score.weight.zero_()
            predictor.cls_score.bias.copy_(torch.tensor(bias))
            predictor.bbox_pred.weight.zero_()
            predictor.bbox_pred.bias.zero_()
        # the last stage moves every box right by 0.1 of its width: dx = 0.1 x its coder weight 30
        heads.box_predictor[2].bbox_pred.bias.copy_(torch.tensor([3.0, 0.0, 0.0, 0.0]))
        head = model(torch.rand(1, 3, 64, 64)).head
    finally:
        model.load_state_dict(saved)
    p = head.predictions
    # softmax of the mean logits [0, 1, 0, 1] (averaging probabilities would give other numbers)
    e = math.e
    assert torch.allclose(p.probabilities[0], torch.tensor([1, e, 1, e]) / (2 + 2 * e))
    proposals = head.proposals[0]  # stages 1 and 2 regress nothing: the last stage pools the proposals
    width = proposals[:, 2] - proposals[:, 0]
    expected = proposals + torch.stack((width, 0 * width, width, 0 * width), 1) * 0.1
    assert torch.allclose(p.boxes[:, 0], expected, atol=1e-4) and torch.equal(p.boxes[:, 1], p.boxes[:, 3])


def test_an_imagenet_resnet50_checkpoint_goes_into_the_backbone_only(tmp_path):
    model = TwoStageDetector("fasterrcnn_tiny", 3)
    body = {k: torch.randn(v.shape) if v.is_floating_point() else v for k, v in model.backbone.body.state_dict().items()}
    path = tmp_path / "resnet50-tiny.pth"
    torch.save({**body, "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}, path)
    fc6 = model.roi_heads.box_head.fc6.weight.clone()
    report = load_weights(model, path)
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.backbone.body.layer3[1].conv2.weight, body["layer3.1.conv2.weight"])
    assert torch.equal(model.roi_heads.box_head.fc6.weight, fc6)


def test_imported_regressors_decode_to_mmdetections_boxes_at_every_stage(tmp_path):
    from detectors.rcnn.cascade_heads import STAGE_REG_WEIGHTS
    from detectors.rcnn.mmdet_keys import MMDET_STAGE_STDS, mmdet_to_torchvision

    g = torch.Generator().manual_seed(0)
    rois = torch.tensor([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 8.0, 4.0]])
    for stage, (stds, weights) in enumerate(zip(MMDET_STAGE_STDS, STAGE_REG_WEIGHTS, strict=True)):
        theirs_bias = torch.randn(4, generator=g)
        ours_bias = mmdet_to_torchvision({f"roi_head.bbox_head.{stage}.fc_reg.bias": theirs_bias}, tmp_path / "x.pth",
                                         cascade=True)[f"roi_heads.box_predictor.{stage}.bbox_pred.bias"]
        # MMDetection's DeltaXYWHBBoxCoder.decode: delta x std, centre moved by (dx w, dy h), size x exp(dw, dh)
        d = theirs_bias * torch.tensor(stds)
        centre, size = (rois[:, :2] + rois[:, 2:]) / 2, rois[:, 2:] - rois[:, :2]
        centre, size = centre + size * d[:2], size * d[2:].exp()
        expected = torch.cat((centre - size / 2, centre + size / 2), 1)
        ours = BoxCoder(weights).decode_single(ours_bias.expand(2, 4), rois)
        assert torch.allclose(ours, expected, atol=1e-4), stage


def test_mssd_gives_gamma_to_strides_4_and_8_of_the_rcnn_taps(tiny):
    from losses.mssd import scale_weights

    strides = sorted(tiny["fasterrcnn_tiny"].tap_channels)
    assert strides == [4, 8, 16, 32]
    assert scale_weights(strides, gamma=0.05, w_m=2.0, w_l=3.0) == {4: 0.05, 8: 0.05, 16: 2.0, 32: 3.0}
