"""A bad image or a bad ``detector.weights`` is refused in one line before any run folder, study folder or
MLflow run exists: by ``mssd train``, ``mssd tune``, ``mssd ablate`` and ``mssd compare`` alike."""

from __future__ import annotations

import shutil

import pytest
import torch
from study_helpers import write_space, write_tiny_config

from study.cli import main


def _refused(argv, capsys, workdir) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("mssd: error: ") and "\n" not in err, err
    assert not workdir.exists() or not any(workdir.iterdir()), sorted(workdir.rglob("*"))
    return err


def _weights_file(tmp_path, kind: str):
    from detectors import build_detector
    from detectors.engine.checkpoint import save_checkpoint

    path = tmp_path / f"{kind.replace(' ', '-')}.pt"
    if kind == "missing file":
        return path, "no such file"
    if kind == "not a checkpoint":
        path.write_text("not weights at all")
        return path, "not a PyTorch weights file"
    if kind == "random tensor":
        torch.save(torch.randn(4, 4), path)
        return path, "expected a state dict"
    if kind == "another family's checkpoint":
        save_checkpoint({"model": build_detector("yolox_nano", num_classes=3).state_dict(), "detector": "yolox_nano"},
                        path)
        return path, "a yolox_nano checkpoint does not fit this"
    if kind == "nan weights":
        state = build_detector("yolov5n", num_classes=3).state_dict()
        first = next(k for k, v in state.items() if v.is_floating_point())
        state[first] = torch.full_like(state[first], float("nan"))
        torch.save(state, path)
        return path, f"tensor {first} holds NaN or Inf values"
    raise AssertionError(kind)


WEIGHTS = ["missing file", "not a checkpoint", "random tensor", "another family's checkpoint", "nan weights"]


@pytest.mark.parametrize("kind", WEIGHTS)
def test_train_refuses_bad_detector_weights_before_writing(tiny_data, tmp_path, capsys, kind):
    weights, expected = _weights_file(tmp_path, kind)
    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    workdir = tmp_path / "runs"
    err = _refused(["train", str(config), "--workdir", str(workdir), "--set", f"detector.weights={weights}"],
                   capsys, workdir)
    assert f"detector.weights {weights}: " in err and expected in err, err
    assert "Error(s) in loading state_dict" not in err


def test_train_refuses_bad_weights_flag_with_the_flag_named(tiny_data, tmp_path, capsys):
    weights, expected = _weights_file(tmp_path, "another family's checkpoint")
    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    workdir = tmp_path / "runs"
    err = _refused(["train", str(config), "--workdir", str(workdir), "--weights", str(weights)], capsys, workdir)
    assert f"--weights {weights}: " in err and "first" in err


@pytest.mark.parametrize("command", ["tune", "ablate", "compare"])
def test_study_commands_refuse_bad_detector_weights_before_writing(tiny_data, tmp_path, capsys, command):
    weights, expected = _weights_file(tmp_path, "random tensor")
    config = write_tiny_config(tmp_path, tiny_data, epochs=1)
    workdir = tmp_path / "runs"
    extra = {"tune": ["--space", str(write_space(tmp_path, "params:\n  losses.mssd.gamma: {distribution: grid, values: [0.1]}\n")),
                      "--samples", "1"],
             "ablate": ["--backend", "local"], "compare": ["--methods", "baseline,mssd", "--backend", "local"]}[command]
    err = _refused([command, str(config), "--workdir", str(workdir), *extra, "--set", f"detector.weights={weights}"],
                   capsys, workdir)
    assert f"detector.weights {weights}: " in err and expected in err, err


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_train_refuses_a_damaged_image_naming_it_before_writing(tiny_data, tmp_path, capsys, damage):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    image = sorted((data / "training" / "image_2").glob("*.png"))[3]
    raw = image.read_bytes()
    image.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else raw[:64] + b"\x00" * (len(raw) - 76) + raw[-12:])
    config = write_tiny_config(tmp_path, data, epochs=1)
    workdir = tmp_path / "runs"
    err = _refused(["train", str(config), "--workdir", str(workdir)], capsys, workdir)
    assert f"{image}: " in err
    assert ("truncated PNG" if damage == "truncated" else "not a decodable image") in err, err
