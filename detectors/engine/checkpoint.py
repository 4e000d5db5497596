"""Training checkpoints: written atomically, read without executing code, and the RNG states they carry.

A checkpoint is a plain dict of tensors and Python primitives (see ``Trainer.state_dict``), saved with
``torch.save`` to a temporary file in the target folder, flushed to disk, then renamed over the target
with ``os.replace``. A crash at any point leaves either the previous complete file or the new complete
file, never a truncated one. Loading uses ``torch.load(weights_only=True)``: a checkpoint is data.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detectors.atomic_write import write_atomic
from detectors.errors import MSSDError

FORMAT = "mssd-checkpoint"
FORMAT_VERSION = 1
LAST, BEST = "last.pt", "best.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: afterwards the file is complete, or unchanged."""
    path = Path(path)
    write_atomic(path, lambda f: torch.save({"format": FORMAT, "version": FORMAT_VERSION, **state}, f))
    return path


def copy_checkpoint(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy a finished checkpoint (``last.pt`` -> ``best.pt``) with the same all-or-nothing guarantee."""
    target = Path(target)

    def write(f: Any) -> None:
        with open(source, "rb") as src:
            shutil.copyfileobj(src, f)

    write_atomic(target, write)
    return target


def is_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint file, a folder holding ``last.pt``, or a run folder holding ``checkpoints/last.pt``."""
    path = Path(path)
    for candidate in (path, path / LAST, path / "checkpoints" / LAST):
        if candidate.is_file():
            return candidate
    raise MSSDError(f"{path}: no checkpoint found (expected a .pt file, or a folder holding {LAST})")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read one of our checkpoints onto the CPU; an ``MSSDError`` if the file is not one."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise MSSDError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # truncated files and foreign pickles fail in many ways
        raise MSSDError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    return check_checkpoint(state, path)


def check_checkpoint(state: Any, path: str | os.PathLike) -> dict[str, Any]:
    """``state`` if it is one of our checkpoints in the current format, else an ``MSSDError``."""
    if not is_checkpoint(state):
        raise MSSDError(f"{path}: not an mssd training checkpoint (no format={FORMAT!r} entry)")
    if state.get("version") != FORMAT_VERSION:
        raise MSSDError(f"{path}: checkpoint format version {state.get('version')}, expected {FORMAT_VERSION}")
    return state


# Config keys a resumed run may change: where things are and how fast, not what is computed.
# (train.epochs may grow to extend a run; the cosine schedule then follows the new length.)
RESUME_MAY_CHANGE = ("tracking.", "data.root", "data.workers", "data.cache", "train.device", "train.epochs",
                     "train.compile", "eval.backend", "eval.rect", "eval.batch_size")


def check_resumable(saved_config: dict[str, Any], cfg: Any, path: str | os.PathLike) -> None:
    """A resumed run must compute what the interrupted one did: a one-line ``ConfigError`` naming the
    changed settings. Callable before anything is written (``mssd train --resume`` checks first)."""
    from detectors.config import flatten_config, parse_saved_config
    from detectors.errors import ConfigError, MSSDError

    # The saved config through today's schema: a key added since the checkpoint was written takes its
    # default (which keeps the old behaviour) instead of reading as a changed setting, renamed keys
    # (data.augment.hflip) read under their new names, and other families' losses.gt keys (one block held
    # them all) are dropped. A config today's schema refuses is compared as saved.
    try:
        old = flatten_config(parse_saved_config(saved_config))
    except MSSDError:
        old = flatten_config(saved_config)
    new = flatten_config(cfg)
    changed = sorted(key for key in old.keys() | new.keys()
                     if old.get(key) != new.get(key) and not key.startswith(RESUME_MAY_CHANGE))
    if changed:
        changed.sort(key=_importance)
        shown = changed if len(changed) <= RESUME_SHOWN_CHANGES else changed[:RESUME_SHOWN_CHANGES]
        details = ", ".join(f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in shown)
        more = f" and {len(changed) - len(shown)} more" if len(shown) < len(changed) else ""
        raise ConfigError(f"{path}: cannot resume with a different config: {details}{more}")


# What a refused resume lists first: the settings that make it another experiment altogether.
RESUME_IMPORTANT = ("detector.name", "detector.", "data.format", "data.classes", "data.img_size", "data.",
                    "losses.method", "seed", "losses.", "train.")
RESUME_SHOWN_CHANGES = 12  # one line stays readable; the rest are counted ("and N more")


def _importance(key: str) -> tuple[int, str]:
    for rank, prefix in enumerate(RESUME_IMPORTANT):
        if key == prefix or (prefix.endswith(".") and key.startswith(prefix)):
            return rank, key
    return len(RESUME_IMPORTANT), key


# ---------------------------------------------------------------------------------------------
# RNG states, as primitives and tensors so that ``weights_only`` loading accepts them


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {
            "bit_generator": np_state["bit_generator"],
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np_state = state["numpy"]
    np.random.set_state(
        {
            "bit_generator": np_state["bit_generator"],
            "state": {"key": np_state["key"].numpy().astype(np.uint32), "pos": np_state["pos"]},
            "has_gauss": np_state["has_gauss"],
            "gauss": np_state["gauss"],
        }
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
