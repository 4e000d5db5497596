"""YOLOv6 in the zoo: names, taps, forward and decoding, re-parameterisation, weights, config, and a run
through the engine."""

from __future__ import annotations

import copy

import pytest
import torch

from detectors import checkpoint_pickle
from detectors.api import DetectorOutput
from detectors.config import parse_config
from detectors.engine.trainer import fit
from detectors.errors import ConfigError
from detectors.weights import WeightsError
from detectors.yolov6.family import YOLOv6GtConfig
from detectors.yolov6.head import YOLOv6HeadOutput
from detectors.zoo import DETECTORS, build_detector, family_of


def _randomised(name: str, nc: int = 3, seed: int = 0):
    """A model whose BatchNorm statistics and prediction convs are away from their initialisation."""
    torch.manual_seed(seed)
    model = build_detector(name, num_classes=nc)
    with torch.no_grad():
        for key, v in model.state_dict().items():
            if key.endswith("running_var"):
                v.uniform_(0.5, 2.0)
            elif key.endswith("running_mean"):
                v.normal_(0, 0.1)
            elif "preds" in key and key.endswith("weight"):
                v.normal_(0, 0.01)
    return model.eval()


def test_every_size_is_in_the_zoo_with_fpn_to_pan_taps():
    assert [n for n in DETECTORS if n.startswith("yolov6")] == ["yolov6n", "yolov6t", "yolov6s", "yolov6m", "yolov6l"]
    assert family_of("yolov6s").smallest == "yolov6n"
    model = build_detector("yolov6s", num_classes=3)
    assert model.tap_channels == {8: (64, 64), 16: (128, 128), 32: (128, 256)}
    assert model.head_input_channels == {8: 64, 16: 128, 32: 256}
    assert build_detector("yolov6n", num_classes=3, taps="backbone_to_pan").tap_channels == {
        8: (64, 32), 16: (128, 64), 32: (256, 128)}
    with pytest.raises(ConfigError, match="yolov6n has no tap set 'layer_15'"):
        build_detector("yolov6n", num_classes=3, taps="layer_15")


def test_training_forward_returns_head_scores_and_taps_at_each_stride():
    model = build_detector("yolov6n", num_classes=3).train()
    out = model(torch.rand(2, 3, 64, 96))
    assert isinstance(out, DetectorOutput) and isinstance(out.head, YOLOv6HeadOutput)
    cells = 8 * 12 + 4 * 6 + 2 * 3
    assert out.head.cls_scores.shape == (2, cells, 3) and out.head.reg_distri.shape == (2, cells, 4)
    for s in (8, 16, 32):
        teacher_ch, student_ch = model.tap_channels[s]
        assert out.teachers[s].shape == (2, teacher_ch, 64 // s, 96 // s)
        assert out.students[s].shape == out.head_inputs[s].shape == (2, student_ch, 64 // s, 96 // s)


def test_forward_head_on_the_head_inputs_is_the_forward_head_output():
    model = _randomised("yolov6n")
    out = model(torch.rand(1, 3, 64, 64))
    again = model.forward_head(out.head_inputs)
    assert torch.equal(again.cls_scores, out.head.cls_scores) and torch.equal(again.reg_distri, out.head.reg_distri)


def test_inference_raw_is_centre_size_in_pixels_with_objectness_one():
    model = _randomised("yolov6n")
    raw = model.inference_raw(torch.rand(1, 3, 64, 64))
    assert raw.shape == (1, 8 * 8 + 4 * 4 + 2 * 2, 5 + 3)
    assert torch.equal(raw[..., 4], torch.ones_like(raw[..., 4]))
    assert ((raw[..., 5:] >= 0) & (raw[..., 5:] <= 1)).all()
    # The first cell (stride 8, centre (4, 4)): raw ltrb distances in strides around it.
    ltrb = model(torch.rand(1, 3, 64, 64)).head.reg_distri[0, 0]
    assert raw[0, 0, :4].shape == ltrb.shape
    dets = model.predict(torch.rand(2, 3, 64, 64), conf=0.001, iou=0.65, max_det=10)
    assert len(dets) == 2 and all(len(d) <= 10 for d in dets)


def test_a_channels_last_training_step_runs_its_backward_as_the_trainer_does():
    """The trainer runs channels_last; a strided 1 x 1 conv on the 3-channel image crashed torch's CPU backward."""
    model = build_detector("yolov6n", num_classes=3).train().to(memory_format=torch.channels_last)
    images = torch.rand(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    out = model(images)
    (out.head.cls_scores.sum() + out.head.reg_distri.sum()).backward()
    assert model.backbone.stem.rbr_1x1.conv.weight.grad is not None


@pytest.mark.parametrize("name", ["yolov6n", "yolov6m"])
def test_fuse_reparameterises_and_keeps_the_outputs(name):
    model = _randomised(name)
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        before = model.inference_raw(images)
        fused = copy.deepcopy(model).fuse()
        after = fused.inference_raw(images)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in model.parameters())
    assert ((after - before).abs().max() / before[..., :4].abs().max()).item() < 1e-4


def test_weights_load_strictly_and_skip_only_class_convs_on_another_class_count(tmp_path):
    source = _randomised("yolov6n", nc=2)
    path = tmp_path / "yolov6n.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    family = family_of("yolov6n")
    same = build_detector("yolov6n", num_classes=2)
    report = family.load_weights(same, path)
    assert not report.skipped and torch.equal(same.state_dict()["backbone.stem.rbr_dense.conv.weight"],
                                              source.state_dict()["backbone.stem.rbr_dense.conv.weight"])
    other = build_detector("yolov6n", num_classes=3)
    report = family.load_weights(other, path)
    assert sorted(report.skipped) == sorted(f"detect.cls_preds.{i}.{p}" for i in range(3) for p in ("weight", "bias"))


def test_weights_of_another_size_are_one_line_naming_the_file_and_tensor(tmp_path):
    path = tmp_path / "yolov6t.pt"
    torch.save(build_detector("yolov6t", num_classes=3).state_dict(), path)
    model = build_detector("yolov6n", num_classes=3)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(WeightsError) as error:
        family_of("yolov6n").load_weights(model, path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and "backbone.stem.rbr_dense.conv.weight" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_their_pickled_classes_become_inert_placeholders():
    unpickler = checkpoint_pickle.RestrictedUnpickler(__import__("io").BytesIO(b""))
    for module, name in (("yolov6.models.yolo", "Model"), ("yolov6.layers.common", "RepVGGBlock")):
        cls = unpickler.find_class(module, name)
        assert issubclass(cls, checkpoint_pickle.Placeholder) and cls.pickled_module == module
    with pytest.raises(checkpoint_pickle.RefusedGlobal):
        unpickler.find_class("yolov6.utils.events", "os")


def test_a_yolov6_config_starts_from_their_recipe_and_gets_its_own_gt_block():
    cfg = parse_config({"detector": {"name": "yolov6s"}})
    train = cfg.train
    assert (train.lr0, train.lrf, train.momentum, train.weight_decay, train.warmup_epochs) == (
        0.005, 0.01, 0.937, 5e-4, 3.0)
    assert train.schedule == "cosine" and train.nominal_batch == 64 and train.grad_clip is None
    assert isinstance(cfg.losses.gt, YOLOv6GtConfig) and cfg.losses.gt.warmup_epoch == 4
    assert not family_of("yolov6s").recipe.loss_scaled_by_batch
    cfg = parse_config({"detector": {"name": "yolov6s"}, "losses": {"gt": {"iou_type": "siou", "warmup_epoch": 2}}})
    loss = family_of("yolov6s").build_loss(build_detector("yolov6n", num_classes=cfg.num_classes), cfg)
    assert loss.iou_type == "siou" and loss.settings.warmup_epoch == 2
    with pytest.raises(ConfigError, match="losses.gt.iou_type"):
        parse_config({"detector": {"name": "yolov6s"}, "losses": {"gt": {"iou_type": "eiou"}}})
    with pytest.raises(ConfigError, match="losses.gt.box"):
        parse_config({"detector": {"name": "yolov6s"}, "losses": {"gt": {"box": 0.05}}})


@pytest.mark.slow
def test_yolov6_trains_and_evaluates_through_the_engine(tmp_path):
    cfg = parse_config({
        "detector": {"name": "yolov6n"},
        "data": {"format": "synthetic", "root": str(tmp_path / "data"), "img_size": 96, "workers": 0,
                 "synthetic": {"images": 10, "seed": 0, "width": 256, "height": 96}},
        "train": {"epochs": 2, "batch_size": 4, "warmup_epochs": 1.0, "device": "cpu", "max_steps_per_epoch": 2},
        "losses": {"gt": {"warmup_epoch": 1}},  # epoch 1 ATSS, epoch 2 TAL
        "eval": {"max_det": 50},
    })
    metrics = fit(cfg, tmp_path / "run")
    for name in ("loss/gt/iou", "loss/gt/dfl", "loss/gt/cls", "loss/distill", "loss/mask", "map"):
        assert name in metrics
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()


def test_prediction_distillers_refuse_its_head_in_one_line_and_lgd_runs_through_forward_head(tmp_path):
    from detectors.distillation import build_distillation_for
    from detectors.zoo import build_detector_for

    teacher = tmp_path / "teacher.pt"
    torch.save(build_detector("yolov6n", num_classes=2).state_dict(), teacher)
    base = {"detector": {"name": "yolov6n"}, "data": {"img_size": 64, "classes": ["a", "b"]}}
    cfg = parse_config({**base, "losses": {"method": "kd"}, "distill": {"teacher": {"name": "yolov6n",
                                                                                    "weights": str(teacher)}}})
    with pytest.raises(ConfigError, match="needs dense heads with objectness") as error:
        build_distillation_for(cfg, build_detector_for(cfg))
    assert "\n" not in str(error.value)
    cfg = parse_config({**base, "losses": {"method": "lgd"}})
    model = build_detector_for(cfg).train()
    images = torch.rand(2, 3, 64, 64)
    terms = build_distillation_for(cfg, model)(model(images), torch.tensor([[0, 1, 0.5, 0.5, 0.4, 0.3]]), 64,
                                               images=images)
    assert all(torch.isfinite(v) for v in terms.values()) and terms["lgd/teacher_gt"] > 0


def test_model_info_counts_the_training_form_and_the_deployed_form():
    from detectors.model_info import model_info

    info = model_info(build_detector("yolov6n", num_classes=3), name="yolov6n", num_classes=3, img_size=64)
    # Their Model at 3 classes: 4,720,087 in training form; RepVGG and Conv+BN folded: 4,299,767.
    assert (info.params, info.params_fused) == (4_720_087, 4_299_767)
