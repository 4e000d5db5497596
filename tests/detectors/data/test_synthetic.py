import hashlib
import warnings

import cv2
import numpy as np
import pytest

from detectors.config import DataConfig, SyntheticConfig
from detectors.data import generate_synthetic_kitti, load_samples, read_kitti
from detectors.data.stats import dataset_stats
from detectors.data.synthetic import CLASSES, render_scene
from detectors.errors import DataFormatError


def _digest(root) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_generator_writes_the_kitti_layout(synthetic_root):
    images = sorted((synthetic_root / "training" / "image_2").iterdir())
    labels = sorted((synthetic_root / "training" / "label_2").iterdir())
    assert [p.name for p in images] == [f"{i:06d}.png" for i in range(10)]
    assert [p.stem for p in labels] == [p.stem for p in images]
    assert cv2.imread(str(images[0])).shape == (112, 320, 3)
    for path in labels:
        for line in path.read_text().splitlines():
            fields = line.split()
            assert len(fields) == 15 and fields[0] in {*CLASSES, "DontCare"}
            [float(v) for v in fields[1:]]
    train = (synthetic_root / "ImageSets" / "train.txt").read_text().split()
    val = (synthetic_root / "ImageSets" / "val.txt").read_text().split()
    assert len(val) == 3 and sorted(train + val) == [p.stem for p in images]


def test_generated_labels_are_clean_and_read_without_warnings(synthetic_root):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        samples = read_kitti(synthetic_root, None, list(CLASSES))
    assert sum(len(s.boxes) for s in samples) >= 20


def test_generator_is_deterministic_for_a_seed_whatever_the_workers(tmp_path):
    one = generate_synthetic_kitti(tmp_path / "a", images=4, seed=5, width=256, height=96, workers=1)
    two = generate_synthetic_kitti(tmp_path / "b", images=4, seed=5, width=256, height=96, workers=2)
    other = generate_synthetic_kitti(tmp_path / "c", images=4, seed=6, width=256, height=96, workers=1)
    assert _digest(one) == _digest(two)
    assert _digest(one) != _digest(other)


def test_scenes_fill_every_coco_size_bucket_and_every_class():
    # Rendering only (no PNG encode): 40 KITTI-sized scenes in about a second.
    counts = np.zeros((3, 3), int)  # class x bucket
    for i in range(40):
        _, objects, _ = render_scene(0, i, 1242, 375)
        for o in objects:
            area = (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])
            counts[CLASSES.index(o.kind), np.digitize(area, [32**2, 96**2])] += 1
    buckets = counts.sum(0)
    assert buckets.min() >= 0.15 * buckets.sum(), buckets
    assert (counts[:, :2] >= 5).all(), counts  # every class is small and medium somewhere
    assert counts[[0, 2], 2].min() >= 5, counts  # cars and cyclists are also often large


def test_classes_differ_in_shape(tmp_path):
    root = generate_synthetic_kitti(tmp_path, images=30, seed=2, width=621, height=188, workers=1)
    samples = read_kitti(root, None, list(CLASSES))
    aspect = {k: [] for k in range(3)}
    for s in samples:
        full = s.boxes[(s.boxes[:, 0] > 1) & (s.boxes[:, 2] < s.width - 2) & (s.boxes[:, 3] < s.height - 2)]
        cls = s.classes[(s.boxes[:, 0] > 1) & (s.boxes[:, 2] < s.width - 2) & (s.boxes[:, 3] < s.height - 2)]
        for box, c in zip(full, cls, strict=True):
            aspect[int(c)].append((box[2] - box[0]) / (box[3] - box[1]))
    car, ped, cyc = (np.median(aspect[k]) for k in range(3))
    assert ped < 0.5 < cyc < 1.1 < car


def test_load_samples_generates_the_synthetic_set_once(tmp_path):
    cfg = DataConfig(format="synthetic", root=str(tmp_path / "set"),
                     synthetic=SyntheticConfig(images=5, seed=3, width=128, height=64, val_fraction=0.4))
    train = load_samples(cfg, "train")
    val = load_samples(cfg, "val")
    assert (len(train), len(val)) == (3, 2)
    assert [s.image_id for s in val] == [0, 1]
    label = tmp_path / "set" / "training" / "label_2" / "000000.txt"
    stamp = label.stat().st_mtime_ns
    load_samples(cfg, "train")
    assert label.stat().st_mtime_ns == stamp  # reused, not regenerated


def test_load_samples_regenerates_when_the_settings_change(tmp_path):
    cfg = DataConfig(root=str(tmp_path / "set"), synthetic=SyntheticConfig(images=4, width=128, height=64))
    load_samples(cfg, "train")
    cfg.synthetic.images = 6
    assert len(load_samples(cfg, "train")) + len(load_samples(cfg, "val")) == 6
    assert len(list((tmp_path / "set" / "training" / "image_2").iterdir())) == 6


def test_synthetic_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    cfg = DataConfig(root=str(tmp_path / "mine"), synthetic=SyntheticConfig(images=2, width=64, height=64))
    with pytest.raises(DataFormatError, match="not written by the generator"):
        load_samples(cfg, "train")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


def test_stats_count_objects_per_class_and_bucket(synthetic_root):
    samples = read_kitti(synthetic_root, None, list(CLASSES))
    stats = dataset_stats(samples, list(CLASSES))
    assert stats["images"] == 10
    assert stats["objects"]["total"] == sum(len(s.boxes) for s in samples)
    assert sum(stats["objects"][b] for b in ("small", "medium", "large")) == stats["objects"]["total"]
    assert sum(c["total"] for c in stats["per_class"].values()) == stats["objects"]["total"]
