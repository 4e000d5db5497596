"""Loading YOLOX weights: Megvii's checkpoint format, class-count changes, other sizes, hostile pickles.

The checkpoints are made here in the format of Megvii's trainer (``save_ckpt``: ``start_epoch``,
``model`` state dict, ``optimizer`` state, ``best_ap`` / ``curr_ap`` as numpy floats, ``torch.save``d);
``benchmarks/verify_yolox_parity.py`` does the same with their own model and their ``save_checkpoint``.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from detectors import checkpoint_pickle
from detectors.weights import WeightsError
from detectors.yolox.model import build_yolox
from detectors.yolox.weights import load_weights


def save_megvii_checkpoint(model: torch.nn.Module, path) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # a momentum buffer per parameter, as in their checkpoints
    torch.save({"start_epoch": 300, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "best_ap": np.float64(40.5), "curr_ap": np.float64(40.1)}, path)


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    model = build_yolox("yolox_nano", 80)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
    return model


def test_megvii_checkpoint_loads_every_tensor_and_reproduces_outputs(tmp_path, source):
    path = tmp_path / "yolox_nano.pth"
    save_megvii_checkpoint(source, path)
    torch.manual_seed(1)
    model = build_yolox("yolox_nano", 80)
    report = load_weights(model, path)
    assert report.source == "checkpoint" and not report.skipped and not report.unexpected
    assert len(report.loaded) == len(source.state_dict())
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.eval().inference_raw(x), source.eval().inference_raw(x))


def test_a_class_count_change_skips_only_the_class_prediction_convs(tmp_path, source):
    path = tmp_path / "coco.pth"
    save_megvii_checkpoint(source, path)
    model = build_yolox("yolox_nano", 3)
    own_bias = model.head.cls_preds[0].bias.detach().clone()
    report = load_weights(model, path)
    assert report.skipped == [f"head.cls_preds.{i}.{p}" for i in range(3) for p in ("weight", "bias")]
    assert len(report.loaded) + len(report.skipped) == len(model.state_dict())
    assert torch.equal(model.head.cls_preds[0].bias, own_bias)  # keeps its prior initialisation
    assert torch.equal(model.head.obj_preds[0].bias, source.head.obj_preds[0].bias)
    assert "skipped (class count differs): head.cls_preds.0.weight" in report.summary()


def test_weights_of_another_size_are_an_error_naming_file_and_key(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({"model": build_yolox("yolox_tiny", 3).state_dict()}, path)
    with pytest.raises(WeightsError, match=r"tiny\.pth: .*missing from the file, first 'backbone\.backbone\.dark2\.0\.dconv"):
        load_weights(build_yolox("yolox_nano", 3), path)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_calls_os_system_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"start_epoch": 1, "model": _Exploit(marker)}, path)
    with pytest.raises(WeightsError, match=r"evil\.pth: refused to load: the pickle calls (posix|os|nt)\.system"):
        load_weights(build_yolox("yolox_nano", 3), path)
    assert not marker.exists()


class _CodecTrick:
    def __reduce__(self):
        import _codecs

        return (_codecs.encode, (b"payload", "zlib_codec"))


def test_the_restricted_reader_allows_bytes_codecs_for_text_encodings_only():
    # Protocol 2 pickles bytes (numpy scalars' data in Megvii's AP records) as _codecs.encode(text, "latin1").
    assert checkpoint_pickle.loads(pickle.dumps(b"\x00\xffraw", protocol=2)) == b"\x00\xffraw"
    with pytest.raises(checkpoint_pickle.RefusedGlobal, match="_codecs.encode with bytes and encoding 'zlib_codec'"):
        checkpoint_pickle.loads(pickle.dumps(_CodecTrick(), protocol=2))
