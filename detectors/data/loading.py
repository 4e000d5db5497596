"""``load_samples(data_cfg, split)``: one entry point over every dataset format.

``synthetic`` generates the set into ``data.root`` on first use (under a file lock, into a temporary
folder renamed into place, so parallel trials never see a half-written set), then reads it as KITTI.
A folder generated with other settings is regenerated; a non-empty folder that the generator did not
write is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from pathlib import Path

from detectors.config import DataConfig, SyntheticConfig
from detectors.data.kitti import label_dir, read_kitti, split_file
from detectors.data.sample import Sample
from detectors.data.synthetic import GENERATOR_VERSION, MANIFEST, generate_synthetic_kitti
from detectors.errors import DataFormatError


def split_source(data_cfg: DataConfig, split: str) -> str:
    """The config value naming a split: ``train``/``val`` go through ``data.train``/``data.val``."""
    if split == "train":
        return data_cfg.train
    if split == "val":
        return data_cfg.val
    return split


def load_samples(data_cfg: DataConfig, split: str) -> list[Sample]:
    """The samples of ``split`` (``"train"``, ``"val"`` or a literal split name/path) in file order.

    A split holding no object of ``data.classes`` is refused: a run on it trains on background and
    evaluates to NaN (the usual cause: class names that differ from the labels', e.g. in case)."""
    samples = read_split(data_cfg, split)
    if samples and not any(len(s.boxes) for s in samples):
        raise DataFormatError(f"{_split_location(data_cfg, split)}: no object of data.classes "
                              f"{list(data_cfg.classes)} in the {len(samples)} images of split {split!r}; check "
                              "data.classes against the labels (names are case-sensitive)")
    return samples


def _split_location(data_cfg: DataConfig, split: str) -> Path:
    """The file (or folder) that lists the split, for messages."""
    source = split_source(data_cfg, split)
    if data_cfg.format in ("kitti", "synthetic"):
        return label_dir(data_cfg.root) if source == "all" else split_file(Path(data_cfg.root), source)
    return Path(data_cfg.root) / source  # an absolute source stays itself


def read_split(data_cfg: DataConfig, split: str) -> list[Sample]:
    """``load_samples`` without the refusal of a split with no object (``mssd data stats`` shows it)."""
    source = split_source(data_cfg, split)
    fmt = data_cfg.format
    if fmt == "synthetic":
        ensure_synthetic(data_cfg.root, data_cfg.synthetic)
        return read_kitti(data_cfg.root, source, data_cfg.classes)
    if fmt == "kitti":
        return read_kitti(data_cfg.root, source, data_cfg.classes)
    if fmt == "coco":
        from detectors.data.coco import read_coco

        root = Path(data_cfg.root)
        images = Path(data_cfg.images) if data_cfg.images else root
        if not images.is_absolute() and data_cfg.images:
            images = root / images
        return read_coco(root / source, images, data_cfg.classes)
    if fmt == "yolo":
        from detectors.data.yolo import read_yolo

        return read_yolo(Path(data_cfg.root), source, data_cfg.classes)
    raise DataFormatError(f"data.format: expected kitti, synthetic, coco or yolo, got {fmt!r}")


def _wanted_manifest(synth: SyntheticConfig) -> dict:
    return {"version": GENERATOR_VERSION, "images": synth.images, "seed": synth.seed, "width": synth.width,
            "height": synth.height, "val_fraction": synth.val_fraction}


def _manifest_matches(root: Path, wanted: dict) -> bool | None:
    """True/False for a generated set with the same/other settings; None when there is no manifest."""
    try:
        found = json.loads((root / MANIFEST).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return all(found.get(k) == v for k, v in wanted.items())


def _refuse_foreign(root: Path, state: bool | None) -> None:
    if state is None and root.is_dir() and any(root.iterdir()):
        raise DataFormatError(f"{root}: data.format is synthetic but this non-empty folder was not written "
                              f"by the generator (no {MANIFEST}); point data.root at a new folder")
    if state is None and root.exists() and not root.is_dir():
        raise DataFormatError(f"{root}: data.format is synthetic but data.root is a file; point it at a folder")


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_synthetic(root: str | Path, synth: SyntheticConfig, *, workers: int | None = None) -> Path:
    """Generate the synthetic set into ``root`` unless it is already there with these settings."""
    root = Path(root)
    wanted = _wanted_manifest(synth)
    state = _manifest_matches(root, wanted)
    if state:
        return root
    # Refused before the lock file is created, so that a refusal leaves nothing behind. Safe without the
    # lock: a folder without a manifest only ever gains one by being replaced by the generator's rename.
    _refuse_foreign(root, state)
    with _locked(root.parent / f".{root.name}.lock"):
        state = _manifest_matches(root, wanted)  # another process may have finished meanwhile
        if state:
            return root
        _refuse_foreign(root, state)
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        generate_synthetic_kitti(tmp, images=synth.images, seed=synth.seed, width=synth.width,
                                 height=synth.height, val_fraction=synth.val_fraction, workers=workers)
        if root.exists():  # a set generated with other settings: replace it as a whole
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            root.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(root)
    return root
