"""Tiny datasets written into tmp dirs: a generated synthetic set and hand-made KITTI layouts."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from detectors.data.synthetic import generate_synthetic_kitti

CLASSES = ["Car", "Pedestrian", "Cyclist"]


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """10 generated images at 320x112: enough objects for loader tests, generated in well under a second."""
    root = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic_kitti(root, images=10, seed=1, width=320, height=112, val_fraction=0.3, workers=1)


@pytest.fixture
def make_kitti(tmp_path):
    """``make_kitti({"000000": "label text", ...}, size=(w, h))`` -> a KITTI root with blank PNGs."""

    def make(labels: dict[str, str], size: tuple[int, int] = (200, 100), split: str = "train") -> Path:
        root = tmp_path / "kitti"
        (root / "training" / "image_2").mkdir(parents=True, exist_ok=True)
        (root / "training" / "label_2").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets").mkdir(exist_ok=True)
        for name, text in labels.items():
            cv2.imwrite(str(root / "training" / "image_2" / f"{name}.png"), np.zeros((size[1], size[0], 3), np.uint8))
            (root / "training" / "label_2" / f"{name}.txt").write_text(text)
        (root / "ImageSets" / f"{split}.txt").write_text("".join(f"{n}\n" for n in labels))
        return root

    return make


@pytest.fixture
def kitti_line():
    """``kitti_line("Car", (x1, y1, x2, y2))``: one 15-field label line (16 with a score)."""

    def line(kind: str, box, score: float | None = None) -> str:
        x1, y1, x2, y2 = box
        text = f"{kind} 0.00 0 -10 {x1} {y1} {x2} {y2} 1.5 1.6 4.0 1.0 1.65 20.0 0.1"
        return text + (f" {score}" if score is not None else "") + "\n"

    return line

