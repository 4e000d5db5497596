"""A refused synthetic root leaves nothing behind: no lock file beside it, the folder untouched."""

import pytest

from detectors.config import DataConfig, SyntheticConfig
from detectors.data import load_samples
from detectors.errors import DataFormatError


def test_a_refused_synthetic_root_leaves_no_lock_file(tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "instances_val.json").write_text("{}")
    cfg = DataConfig(root=str(tmp_path / "coco"), synthetic=SyntheticConfig(images=2, width=64, height=64))
    with pytest.raises(DataFormatError, match="coco: data.format is synthetic but this non-empty folder"):
        load_samples(cfg, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["coco"]


def test_a_synthetic_root_that_is_a_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "set").write_text("x")
    cfg = DataConfig(root=str(tmp_path / "set"), synthetic=SyntheticConfig(images=2, width=64, height=64))
    with pytest.raises(DataFormatError, match="set: data.format is synthetic but data.root is a file"):
        load_samples(cfg, "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
