import warnings

import numpy as np
import pytest

from detectors.data import DataWarning, read_kitti
from detectors.errors import DataFormatError

CLASSES = ["Car", "Pedestrian", "Cyclist"]


def test_kitti_reader_maps_classes_keeps_dontcare_as_ignore_and_drops_other_types(make_kitti, kitti_line):
    root = make_kitti({"000000": kitti_line("Car", (10, 20, 50, 60)) + kitti_line("Van", (1, 1, 5, 5))
                       + kitti_line("DontCare", (100, 10, 150, 40)) + kitti_line("Cyclist", (60, 5, 80, 95))})
    (sample,) = read_kitti(root, "train", CLASSES)
    assert (sample.width, sample.height, sample.name, sample.image_id) == (200, 100, "000000", 0)
    np.testing.assert_array_equal(sample.boxes, [[10, 20, 50, 60], [60, 5, 80, 95]])
    np.testing.assert_array_equal(sample.classes, [0, 2])
    np.testing.assert_array_equal(sample.ignore, [[100, 10, 150, 40]])
    assert sample.boxes.dtype == np.float32 and sample.classes.dtype == np.int64


def test_empty_label_file_is_a_background_image(make_kitti):
    (sample,) = read_kitti(make_kitti({"000007": ""}), "train", CLASSES)
    assert sample.boxes.shape == (0, 4) and sample.classes.shape == (0,) and sample.ignore.shape == (0, 4)


def test_image_ids_follow_split_file_order(make_kitti, kitti_line):
    root = make_kitti({"000005": "", "000002": kitti_line("Car", (1, 1, 9, 9))})
    samples = read_kitti(root, "train", CLASSES)
    assert [(s.image_id, s.name) for s in samples] == [(0, "000005"), (1, "000002")]


def test_wrong_field_count_names_file_and_line(make_kitti, kitti_line):
    root = make_kitti({"000000": kitti_line("Car", (1, 1, 9, 9)) + "Car 0 0 -10 1 2 3 4\n"})
    with pytest.raises(DataFormatError, match=r"label_2/000000\.txt:2: expected 15 fields, got 8"):
        read_kitti(root, "train", CLASSES)


def test_non_numeric_field_names_file_line_and_field(make_kitti):
    root = make_kitti({"000000": "Car 0.00 0 -10 10 abc 50 60 1.5 1.6 4.0 1.0 1.65 20.0 0.1\n"})
    with pytest.raises(DataFormatError, match=r"000000\.txt:1: top: expected a number, got 'abc'"):
        read_kitti(root, "train", CLASSES)


def test_missing_image_names_its_path(make_kitti):
    root = make_kitti({"000000": ""})
    (root / "training" / "image_2" / "000000.png").unlink()
    with pytest.raises(DataFormatError, match=r"image_2/000000\.png: image not found"):
        read_kitti(root, "train", CLASSES)


def test_missing_split_file_names_its_path(make_kitti):
    root = make_kitti({"000000": ""})
    with pytest.raises(DataFormatError, match=r"ImageSets/val\.txt: split file not found"):
        read_kitti(root, "val", CLASSES)


def test_boxes_are_clipped_and_degenerate_ones_dropped_with_one_summary_warning(make_kitti, kitti_line):
    root = make_kitti({
        "000000": kitti_line("Car", (-5, 10, 50, 120)) + kitti_line("Car", (30, 30, 30, 60)),
        "000001": kitti_line("Pedestrian", (210, 10, 250, 50)) + kitti_line("Cyclist", (190, 10, 230, 50)),
    })
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = read_kitti(root, "train", CLASSES)
    assert len(caught) == 1 and caught[0].category is DataWarning
    assert "clipped 2 box(es)" in str(caught[0].message) and "dropped 2 degenerate" in str(caught[0].message)
    np.testing.assert_array_equal(samples[0].boxes, [[0, 10, 50, 100]])
    np.testing.assert_array_equal(samples[1].boxes, [[190, 10, 200, 50]])
    np.testing.assert_array_equal(samples[1].classes, [2])


def test_clean_labels_raise_no_warning(make_kitti, kitti_line):
    root = make_kitti({"000000": kitti_line("Car", (1, 1, 9, 9))})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_kitti(root, "train", CLASSES)
