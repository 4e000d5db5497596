import json

import cv2
import numpy as np
import pytest

from detectors.config import DataConfig
from detectors.data import load_samples
from detectors.errors import DataFormatError

CLASSES = ["Car", "Pedestrian", "Cyclist"]


def _image(path, size=(64, 48)):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.zeros((size[1], size[0], 3), np.uint8))


def _coco(tmp_path, annotations, images=None):
    _image(tmp_path / "img" / "a.png")
    data = {"images": images or [{"id": 7, "file_name": "a.png", "width": 64, "height": 48}],
            "categories": [{"id": 1, "name": "Car"}, {"id": 3, "name": "Cyclist"}, {"id": 9, "name": "Tram"}],
            "annotations": annotations}
    (tmp_path / "val.json").write_text(json.dumps(data, indent=1))
    return DataConfig(format="coco", root=str(tmp_path), val="val.json", images="img", classes=CLASSES)


def test_coco_reader_matches_categories_by_name_and_keeps_crowds_as_ignore(tmp_path):
    cfg = _coco(tmp_path, [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [1, 2, 10, 20]},
        {"id": 2, "image_id": 7, "category_id": 9, "bbox": [5, 5, 5, 5]},
        {"id": 3, "image_id": 7, "category_id": 1, "bbox": [30, 10, 8, 8], "iscrowd": 1},
    ])
    (sample,) = load_samples(cfg, "val")
    assert (sample.image_id, sample.name, sample.width, sample.height) == (0, "a", 64, 48)
    np.testing.assert_array_equal(sample.boxes, [[1, 2, 11, 22]])
    np.testing.assert_array_equal(sample.classes, [2])
    np.testing.assert_array_equal(sample.ignore, [[30, 10, 38, 18]])


def test_coco_reader_names_the_key_path_of_a_bad_bbox(tmp_path):
    cfg = _coco(tmp_path, [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 2, 3]}])
    with pytest.raises(DataFormatError, match=r"val\.json: annotations\[0\]\.bbox: expected 4 numbers"):
        load_samples(cfg, "val")


def test_coco_reader_names_the_line_of_invalid_json(tmp_path):
    cfg = _coco(tmp_path, [])
    (tmp_path / "val.json").write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(DataFormatError, match=r"val\.json:2: invalid JSON"):
        load_samples(cfg, "val")


def test_coco_reader_names_a_missing_image(tmp_path):
    cfg = _coco(tmp_path, [], images=[{"id": 1, "file_name": "nope.png", "width": 4, "height": 4}])
    with pytest.raises(DataFormatError, match=r"img/nope\.png: image not found"):
        load_samples(cfg, "val")


def _yolo(tmp_path, labels: dict[str, str]):
    for name, text in labels.items():
        _image(tmp_path / "images" / "val" / f"{name}.jpg", size=(100, 50))
        if text is not None:
            (tmp_path / "labels" / "val").mkdir(parents=True, exist_ok=True)
            (tmp_path / "labels" / "val" / f"{name}.txt").write_text(text)
    return DataConfig(format="yolo", root=str(tmp_path), val="images/val", classes=CLASSES)


def test_yolo_reader_denormalises_boxes_and_treats_missing_labels_as_background(tmp_path):
    cfg = _yolo(tmp_path, {"a": "1 0.5 0.5 0.2 0.4\n", "b": None})
    a, b = load_samples(cfg, "val")
    np.testing.assert_allclose(a.boxes, [[40, 15, 60, 35]], atol=1e-4)
    np.testing.assert_array_equal(a.classes, [1])
    assert b.boxes.shape == (0, 4) and (a.width, a.height) == (100, 50)


@pytest.mark.parametrize(("line", "message"), [
    ("1 0.5 0.5 0.2\n", r"a\.txt:1: expected 5 fields"),
    ("x 0.5 0.5 0.2 0.1\n", r"a\.txt:1: class: expected an integer id"),
    ("3 0.5 0.5 0.2 0.1\n", r"a\.txt:1: class: expected an id in 0\.\.2, got 3"),
    ("0 0.5 nan 0.2 0.1\n", r"a\.txt:1: cy: expected a finite number"),
])
def test_yolo_reader_rejects_malformed_lines_naming_file_and_line(tmp_path, line, message):
    with pytest.raises(DataFormatError, match=message):
        load_samples(_yolo(tmp_path, {"a": line}), "val")
