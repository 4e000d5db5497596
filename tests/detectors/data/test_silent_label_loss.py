"""Labels are never dropped silently: a split that would train on background, or a COCO file whose
references dangle, is refused in one line naming the file and the first offender."""

import json

import cv2
import numpy as np
import pytest

from detectors.config import DataConfig
from detectors.data import load_samples
from detectors.errors import DataFormatError

CLASSES = ["Car", "Pedestrian"]


def _coco(tmp_path, annotations, categories=None):
    (tmp_path / "img").mkdir(exist_ok=True)
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    data = {"images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 48}],
            "categories": categories or [{"id": 1, "name": "Car"}, {"id": 2, "name": "Pedestrian"}],
            "annotations": annotations}
    (tmp_path / "val.json").write_text(json.dumps(data))
    return DataConfig(format="coco", root=str(tmp_path), val="val.json", images="img", classes=CLASSES)


def test_coco_categories_that_differ_only_in_case_are_refused_with_a_hint(tmp_path):
    cfg = _coco(tmp_path, [{"id": 5, "image_id": 7, "category_id": 1, "bbox": [1, 2, 10, 20]}],
                categories=[{"id": 1, "name": "car"}, {"id": 2, "name": "person"}])
    with pytest.raises(DataFormatError, match=r"val\.json: no category matches data\.classes") as info:
        load_samples(cfg, "val")
    assert "'car' for 'Car'" in str(info.value) and "\n" not in str(info.value)


def test_coco_annotation_with_an_unknown_category_id_is_named(tmp_path):
    cfg = _coco(tmp_path, [{"id": 5, "image_id": 7, "category_id": 1, "bbox": [1, 2, 10, 20]},
                           {"id": 6, "image_id": 7, "category_id": 4, "bbox": [1, 2, 10, 20]}])
    with pytest.raises(DataFormatError, match=r"val\.json: annotations\[1\] \(id 6\): category_id 4 is not in "
                                              r"categories"):
        load_samples(cfg, "val")


def test_coco_annotation_whose_image_id_names_no_image_is_named(tmp_path):
    cfg = _coco(tmp_path, [{"id": 5, "image_id": 8, "category_id": 1, "bbox": [1, 2, 10, 20]}])
    with pytest.raises(DataFormatError, match=r"val\.json: annotations\[0\] \(id 5\): image_id 8 names no entry"):
        load_samples(cfg, "val")


def test_coco_split_without_an_object_of_the_classes_is_refused(tmp_path):
    cfg = _coco(tmp_path, [], categories=[{"id": 1, "name": "Car"}])
    with pytest.raises(DataFormatError, match=r"val\.json: no object of data\.classes \['Car', 'Pedestrian'\] "
                                              r"in the 1 images of split 'val'"):
        load_samples(cfg, "val")


def test_kitti_split_whose_types_are_all_other_classes_is_refused(tmp_path):
    (tmp_path / "training" / "image_2").mkdir(parents=True)
    (tmp_path / "training" / "label_2").mkdir(parents=True)
    (tmp_path / "ImageSets").mkdir()
    cv2.imwrite(str(tmp_path / "training" / "image_2" / "000000.png"), np.zeros((48, 64, 3), np.uint8))
    (tmp_path / "training" / "label_2" / "000000.txt").write_text(
        "car 0.00 0 -10 1.00 2.00 30.00 40.00 -1 -1 -1 -1000 -1000 -1000 -10\n")
    (tmp_path / "ImageSets" / "val.txt").write_text("000000\n")
    cfg = DataConfig(format="kitti", root=str(tmp_path), classes=CLASSES)
    with pytest.raises(DataFormatError, match=r"ImageSets/val\.txt: no object of data\.classes"):
        load_samples(cfg, "val")
