"""losses.method dispatch and the comparator interface (detectors/comparators/base.py), with a stub method."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from torch import nn

from detectors.comparators import BUILDERS, Comparator
from detectors.comparators.method_distillation import MethodDistillation
from detectors.config import parse_config
from detectors.distillation import Distillation, build_distillation, build_distillation_for
from detectors.errors import ConfigError
from detectors.zoo import build_detector

CLASSES = ["a", "b"]


def cfg(**losses):
    return parse_config({"detector": {"name": "yolov5n"}, "data": {"classes": CLASSES, "img_size": 64},
                         "losses": losses})


class Stub(Comparator):
    """One adapter, one term: mean(adapter(S_8)^2); declares the interface's names."""

    name = "stub"
    term_names = ("stub", "stub/part")

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.adapter = nn.Conv2d(channels, 2, 1)

    def forward(self, output, targets, img_size, *, images=None, teacher_output=None):
        part = self.adapter(output.head_inputs[8]).pow(2).mean()
        return {"stub": part, "stub/part": part}


@pytest.fixture
def stub_method(monkeypatch):
    module = types.ModuleType("stub_comparator")
    module.build = lambda losses_cfg, context: Stub(context.model.head_input_channels[8])
    monkeypatch.setitem(sys.modules, "stub_comparator", module)
    monkeypatch.setitem(BUILDERS, "kd", "stub_comparator")  # any method name routes through the table


def test_mssd_is_the_default_and_none_adds_nothing():
    model = build_detector("yolov5n", num_classes=2)
    assert isinstance(build_distillation_for(cfg(), model), Distillation)
    none = build_distillation_for(cfg(method="none"), model)
    assert isinstance(none, MethodDistillation) and none.term_names == ()
    assert none.count_parameters() == {"total": 0} and not list(none.parameters())
    images = torch.zeros(1, 3, 64, 64)
    assert none(model(images), torch.zeros(0, 6), 64, images=images) == {}
    gt = torch.tensor(2.0)
    assert none.total_loss(gt, {}, 4) is gt


def test_a_method_is_dispatched_through_the_table_and_scaled_as_eq_7(stub_method):
    torch.manual_seed(0)
    model = build_detector("yolov5n", num_classes=2)
    run = parse_config({"detector": {"name": "yolov5n"}, "data": {"classes": CLASSES, "img_size": 64},
                        "losses": {"method": "fgfi"}})
    run.losses.method = "kd"  # routed to the stub by the fixture; kd's teacher is not needed by the stub
    dist = build_distillation(run.losses, model)
    assert dist.term_names == ("stub", "stub/part") and dist.teacher is None
    assert dist.count_parameters() == {"kd": 64 * 2 + 2, "total": 130}
    assert [n for n, _ in dist.named_children()] == ["kd"]  # mssd model info's part name
    images = torch.rand(2, 3, 64, 64)
    terms = dist(model(images), torch.zeros(0, 6), 64, images=images)
    assert list(terms) == ["stub", "stub/part"]
    gt = torch.tensor(1.5)
    # losses.scale unscaled_terms (the default): only L_gt carries the batch factor
    assert dist.total_loss(gt, terms, 4).item() == pytest.approx(1.5 + terms["stub"].item())
    dist.start_epoch(1)
    run.losses.warmup.zero_epochs = 1
    warm = build_distillation(run.losses, model)
    warm.start_epoch(1)
    assert warm.total_loss(gt, terms, 4).item() == pytest.approx(1.5)


def test_a_teacher_method_without_teacher_weights_is_one_config_line():
    model = build_detector("yolov5n", num_classes=2)
    with pytest.raises(ConfigError, match=r"distill\.teacher\.weights: losses.method fgfi needs"):
        build_distillation_for(cfg(method="fgfi"), model)


def test_an_unimplemented_method_is_a_config_error(monkeypatch):
    monkeypatch.setitem(BUILDERS, "lgd", "detectors.comparators.not_there")
    with pytest.raises(ConfigError, match="losses.method: lgd is not implemented"):
        build_distillation_for(cfg(method="lgd"), build_detector("yolov5n", num_classes=2))


def test_method_blocks_are_validated_with_their_key_paths():
    with pytest.raises(ConfigError, match="losses.method: expected one of"):
        cfg(method="fitnet")
    with pytest.raises(ConfigError, match=r"losses\.kd\.temperature: expected a value > 0"):
        cfg(kd={"temperature": 0})
    with pytest.raises(ConfigError, match=r"losses\.fgfi\.psi: expected a value > 0.0 and <= 1.0"):
        cfg(fgfi={"psi": 1.5})
    with pytest.raises(ConfigError, match=r"losses\.fgfi\.anchors\[1\]: expected w, h pairs"):
        cfg(fgfi={"anchors": [[10, 13], [30]]})
    with pytest.raises(ConfigError, match=r"distill\.teacher\.name: expected one of"):
        parse_config({"distill": {"teacher": {"name": "resnet"}}})
