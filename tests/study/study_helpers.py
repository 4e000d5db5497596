"""Helpers shared by the study tests (imported as ``study_helpers``)."""

from __future__ import annotations

import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPACES = REPO / "search_spaces"


def write_tiny_config(folder: Path, data_root: Path, epochs: int = 2) -> Path:
    """configs/smoke.yaml made seconds-long: 64 px, batch 4, 2 steps per epoch."""
    from study.config import load_config, save_config

    path = folder / "tiny.yaml"
    cfg = load_config(REPO / "configs" / "smoke.yaml", [f"data.root={data_root}", "data.img_size=64", "train.batch_size=4",
                             "train.max_steps_per_epoch=2", f"train.epochs={epochs}", "eval.max_det=50",
                             "train.warmup_epochs=0"])
    save_config(cfg, path)
    return path


def write_space(folder: Path, text: str, name: str = "space.yaml") -> Path:
    path = folder / name
    path.write_text(text)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
