"""A comparator the detector cannot serve is refused by `mssd train` in one line naming the setting, before
the run folder, the MLflow store or its run exist (KD on Faster R-CNN used to stop with an AttributeError,
then with a ConfigError after the run had started)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("method", ["kd", "defeat"])
def test_prediction_distillation_of_a_two_stage_detector_is_refused_before_anything_is_written(tmp_path, capsys,
                                                                                               method):
    import torch

    from detectors.zoo import build_detector
    from study.cli import main

    teacher = tmp_path / "teacher.pt"
    torch.save(build_detector("fasterrcnn_tiny", num_classes=3).state_dict(), teacher)
    config = tmp_path / "rcnn.yaml"
    config.write_text(f"detector: {{name: fasterrcnn_tiny}}\ndata: {{format: synthetic, root: {tmp_path / 'data'}, "
                      f"img_size: 64}}\nlosses: {{method: {method}}}\n"
                      f"distill: {{teacher: {{name: fasterrcnn_tiny, weights: {teacher}}}}}\n")
    workdir = tmp_path / "runs"
    code = main(["train", str(config), "--workdir", str(workdir)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("mssd: error: losses.") and "needs dense heads" in err and "\n" not in err, err
    assert not workdir.exists() and not (tmp_path / "data").exists()
