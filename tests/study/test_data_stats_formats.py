"""``mssd data stats`` reads every data.format: a config's data section, or a folder with --format."""

from __future__ import annotations

import json

import cv2
import numpy as np
from study_helpers import write_tiny_config

from study.cli import main


def _image(path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((size[1], size[0], 3), np.uint8))


def _block(out: str, split: str) -> str:
    return out.split(f"[{split}]", 1)[1].split("\n\n", 1)[0]


def test_stats_of_a_coco_folder_counts_every_annotation_file(tmp_path, capsys):
    _image(tmp_path / "img" / "a.png")
    for split, boxes in (("train", 2), ("val", 1)):
        data = {"images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}],
                "categories": [{"id": 1, "name": "Car"}, {"id": 2, "name": "Cyclist"}],
                "annotations": [{"id": i, "image_id": 1, "category_id": 1 + i % 2, "bbox": [1, 1, 40, 40]}
                                for i in range(boxes)]}
        (tmp_path / f"{split}.json").write_text(json.dumps(data))
    assert main(["data", "stats", str(tmp_path), "--format", "coco", "--images", str(tmp_path / "img")]) == 0
    out = capsys.readouterr().out
    assert out.index("[train.json]") < out.index("[val.json]")
    assert "Car  " in _block(out, "train.json") and "all" in _block(out, "train.json")
    train_all = [line for line in _block(out, "train.json").splitlines() if line.startswith("all")][0]
    assert train_all.split()[1] == "2"  # two objects, one of each class
    val_all = [line for line in _block(out, "val.json").splitlines() if line.startswith("all")][0]
    assert val_all.split()[1] == "1"


def test_stats_of_a_yolo_folder_reads_each_images_split(tmp_path, capsys):
    for split, lines in (("train", "0 0.5 0.5 0.2 0.2\n2 0.3 0.3 0.1 0.1\n"), ("val", "")):
        _image(tmp_path / "images" / split / "x.jpg", size=(100, 50))
        (tmp_path / "labels" / split).mkdir(parents=True)
        (tmp_path / "labels" / split / "x.txt").write_text(lines)
    assert main(["data", "stats", str(tmp_path), "--format", "yolo"]) == 0
    out = capsys.readouterr().out
    assert "[images/train]" in out and "[images/val]" in out
    assert "images 1 (background 1)" in _block(out, "images/val")
    cyclist = [line for line in _block(out, "images/train").splitlines() if line.startswith("Cyclist")][0]
    assert cyclist.split()[1] == "1"


def test_stats_of_a_config_read_its_format_train_and_val(tiny_data, tmp_path, capsys):
    config = write_tiny_config(tmp_path, tiny_data)
    assert main(["data", "stats", str(config)]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out and "[val]" in out and "[all]" not in out


def test_stats_refuses_a_split_a_config_does_not_have(tiny_data, tmp_path, capsys):
    config = write_tiny_config(tmp_path, tiny_data)
    assert main(["data", "stats", str(config), "--split", "test"]) == 2
    assert "--split test: a config names its splits train and val" in capsys.readouterr().err
