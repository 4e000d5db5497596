import json
import shutil

import pytest

from study.cli import main


@pytest.fixture(scope="module")
def kitti_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "synth"
    assert main(["data", "synth", "--out", str(root), "--images", "8", "--seed", "4", "--size", "320x112",
                 "--workers", "1"]) == 0
    return root


def _gt_as_predictions(root, split, out, score="0.9"):
    """Copy the split's label files as results, adding the 16th (score) field."""
    out.mkdir(parents=True, exist_ok=True)
    for name in (root / "ImageSets" / f"{split}.txt").read_text().split():
        lines = (root / "training" / "label_2" / f"{name}.txt").read_text().splitlines()
        (out / f"{name}.txt").write_text("".join(f"{line} {score}\n" for line in lines))
    return out


def test_synth_writes_the_requested_set(kitti_root, capsys):
    assert len(list((kitti_root / "training" / "image_2").glob("*.png"))) == 8
    assert main(["data", "synth", "--out", str(kitti_root), "--images", "8", "--seed", "4", "--size",
                 "320x112"]) == 0  # same settings: reused
    assert "8 images 320x112" in capsys.readouterr().out


def test_synth_rejects_a_bad_size(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["data", "synth", "--out", "x", "--size", "12by4"])
    assert exc.value.code == 2 and "expected WIDTHxHEIGHT" in capsys.readouterr().err


def test_stats_prints_classes_and_buckets_per_split(kitti_root, capsys):
    assert main(["data", "stats", str(kitti_root)]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out and "[val]" in out and "[all]" in out and "images 8" in out
    for word in ("Car", "Pedestrian", "Cyclist", "small", "medium", "large"):
        assert word in out


def test_stats_fails_on_a_malformed_label_naming_file_and_line(kitti_root, tmp_path, capsys):
    root = tmp_path / "bad"
    shutil.copytree(kitti_root, root)
    label = root / "training" / "label_2" / "000003.txt"
    label.write_text(label.read_text() + "Car 0 0\n")
    assert main(["data", "stats", str(root)]) == 2
    err = capsys.readouterr().err
    assert "000003.txt:" in err and "expected 15 fields, got 3" in err


def test_evaluate_ground_truth_as_predictions_scores_one(kitti_root, tmp_path, capsys):
    pred = _gt_as_predictions(kitti_root, "val", tmp_path / "pred")
    out_json = tmp_path / "metrics.json"
    assert main(["data", "evaluate", "--gt", str(kitti_root), "--split", "val", "--pred", str(pred),
                 "--json", str(out_json)]) == 0
    assert "ap/Car" in capsys.readouterr().out
    metrics = json.loads(out_json.read_text())
    assert set(metrics) == {"map", "ap50", "ap75", "aps", "apm", "apl", "per_class"}
    assert metrics["map"] == pytest.approx(1.0) and metrics["ap50"] == pytest.approx(1.0)
    assert all(v is None or v == pytest.approx(1.0) for v in metrics["per_class"].values())


def test_evaluate_treats_a_missing_result_file_as_no_detections(kitti_root, tmp_path):
    pred = _gt_as_predictions(kitti_root, "train", tmp_path / "pred")
    names = (kitti_root / "ImageSets" / "train.txt").read_text().split()
    busiest = max(names, key=lambda n: len((pred / f"{n}.txt").read_text().splitlines()))
    (pred / f"{busiest}.txt").unlink()
    out_json = tmp_path / "m.json"
    assert main(["data", "evaluate", "--gt", str(kitti_root), "--split", "train", "--pred", str(pred),
                 "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["map"] < 1.0


def test_evaluate_fails_on_a_malformed_result_line(kitti_root, tmp_path, capsys):
    pred = tmp_path / "pred"
    pred.mkdir()
    name = (kitti_root / "ImageSets" / "val.txt").read_text().split()[0]
    (pred / f"{name}.txt").write_text("Car 0 0 -10 1 2 30 40 1 1 1 1 1 1 0\n")  # 15 fields: no score
    assert main(["data", "evaluate", "--gt", str(kitti_root), "--pred", str(pred)]) == 2
    assert f"{name}.txt:1: expected 16 fields, got 15" in capsys.readouterr().err
