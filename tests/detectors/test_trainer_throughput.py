"""The trainer's faster step (issue 13) inside real tiny runs: the non-finite check stays exact when the
loss terms are read late, no step syncs unless a callback reads its items, and train.compile's wiring
(checked with torch.compile's eager backend: tracing, not code generation) trains the same run."""

from __future__ import annotations

import math

import pytest

from detectors.config import parse_config
from detectors.engine import trainer as trainer_module
from detectors.engine.trainer import Trainer, fit
from detectors.errors import NonFiniteLossError


def _config(root, **train):
    return parse_config({
        "seed": 0,
        "detector": {"name": "yolov5n"},
        "data": {"format": "synthetic", "root": str(root), "img_size": 64, "workers": 0,
                 "synthetic": {"images": 10, "seed": 0, "width": 256, "height": 96}},
        "train": {"epochs": 1, "batch_size": 2, "warmup_epochs": 1.0, "device": "cpu", **train},
        "eval": {"max_det": 50},
    })


class Steps:
    def __init__(self, read: bool) -> None:
        self.read = read
        self.items: list = []

    def after_step(self, trainer, step, items):
        self.items.append(dict(items) if self.read else items)


def test_a_late_read_still_names_the_first_non_finite_step_and_stops_before_eval_and_checkpoint(
        tmp_path, monkeypatch):
    calls = []
    real_forward_loss = Trainer.forward_loss

    def poisoned(self, images, targets):
        loss, values = real_forward_loss(self, images, targets)
        calls.append(1)
        if len(calls) in (2, 3):  # steps 2 and 3: the error must name 2 (and its first bad term)
            values = values.clone()
            values[0] = math.nan
            values[3 if len(calls) == 2 else 2] = math.inf  # step 2: the third term (gt's 2nd); step 3: another
            loss = loss * math.nan
        return loss, values

    monkeypatch.setattr(Trainer, "forward_loss", poisoned)
    trainer = Trainer(_config(tmp_path / "data"), tmp_path / "run", callbacks=[Steps(read=False)])
    trainer.loss_read_interval = 100  # read only at the end of the epoch (4 steps)
    evaluated = []
    monkeypatch.setattr(trainer, "evaluate", lambda: evaluated.append(1) or {})
    name = trainer.loss_terms[3]
    with pytest.raises(NonFiniteLossError, match=rf"epoch 1, step 2: loss/{name} = inf \(loss/total = nan\)"):
        trainer.fit()
    assert len(calls) == trainer.steps_per_epoch == 4  # the epoch's steps ran; the error came at the read
    assert not evaluated and not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_items_stay_on_the_device_until_a_callback_reads_them(tmp_path):
    lazy = Steps(read=False)
    trainer = Trainer(_config(tmp_path / "data"), tmp_path / "run", callbacks=[lazy])
    trainer.loss_read_interval = 100
    trainer.fit()
    assert len(lazy.items) == 4
    # Nothing read during the epoch, everything read at its end: the values are there now.
    assert all(math.isfinite(items["total"]) for items in lazy.items)
    assert trainer.history[-1]["loss/total"] == pytest.approx(sum(i["total"] for i in lazy.items) / 4, rel=1e-6)
    assert trainer.history[-1]["time/train_steps"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["model", "step"])
def test_train_compile_trains_the_same_run(tmp_path, monkeypatch, mode):
    monkeypatch.setattr(trainer_module, "COMPILE_BACKEND", "eager")  # Dynamo's capture, eager kernels
    reference, compiled = Steps(read=True), Steps(read=True)
    fit(_config(tmp_path / "data", max_steps_per_epoch=2), tmp_path / "plain", callbacks=[reference])
    fit(_config(tmp_path / "data", max_steps_per_epoch=2, compile=mode), tmp_path / mode, callbacks=[compiled])
    for a, b in zip(reference.items, compiled.items, strict=True):
        assert list(a.values()) == pytest.approx(list(b.values()), rel=1e-5, abs=1e-7)
