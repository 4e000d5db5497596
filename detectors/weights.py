"""Read weights files without running their code, and copy matching tensors into a model.

Families build their ``load_weights`` on these two functions (``detectors/<family>/weights.py``):

- ``read_state_dict(path)``: a plain state dict, a checkpoint dict holding one under ``ema`` / ``model``
  / ``state_dict`` (``ema`` preferred, as Ultralytics' ``attempt_load``; YOLOX's ``model`` entry is the
  EMA model already), or a pickled whole model (Ultralytics' ``.pt``). ``torch.load(weights_only=True)``
  first; what it refuses (pickled modules, numpy scalars) goes through ``checkpoint_pickle``'s restricted
  unpickler, which never imports or calls anything but tensor rebuilding.
- ``load_matching(model, path, class_dependent=..., expected=...)``: copies every tensor whose key and
  shape match; keys matched by ``class_dependent`` (the class-prediction convs) may differ in shape
  (another class count): they keep the model's own initialisation and are reported. Any other missing
  key or shape difference means weights of another model and is an error naming the file and the key.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detectors import checkpoint_pickle
from detectors.checkpoint_pickle import Placeholder, RefusedGlobal
from detectors.errors import MSSDError


class WeightsError(MSSDError):
    """A weights file cannot be read or does not fit the model; the message names the file."""


@dataclass
class LoadReport:
    path: str
    source: str  # "state_dict", "checkpoint" (dict holding a state dict) or "ultralytics" (pickled model)
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # shape differs: class-prediction convs
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model (ignored)
    class_names: list[str] | None = None  # the checkpoint's class names when it has them

    def summary(self) -> str:
        lines = [f"{self.path} ({self.source}): loaded {len(self.loaded)} tensors, skipped {len(self.skipped)}"]
        if self.skipped:
            lines.append("  skipped (class count differs): " + ", ".join(self.skipped))
        if self.unexpected:
            lines.append("  ignored (not in this model): " + ", ".join(self.unexpected))
        return "\n".join(lines)


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str, list[str] | None]:
    """(float state dict, source kind, class names or None) from a weights file, never running its code."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        obj = _load_restricted(path)  # pickled modules or numpy scalars need placeholders
    except Exception as exc:  # zip/EOF errors: not a torch file at all
        raise WeightsError(f"{path}: not a PyTorch weights file ({type(exc).__name__}: {exc})") from exc
    return _extract(obj, path)


def _load_restricted(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", pickle_module=checkpoint_pickle, weights_only=False)
    except RefusedGlobal as exc:
        raise WeightsError(
            f"{path}: refused to load: the pickle calls {exc.global_name}, which is not a tensor, a torch.nn "
            "module or a class of a known checkpoint format (the file may be malicious)"
        ) from exc
    except Exception as exc:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from exc


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _extract(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], str, list[str] | None]:
    if _is_state_dict(obj):
        return _as_float(obj), "state_dict", None
    if isinstance(obj, Mapping):
        for key in ("ema", "model", "state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Placeholder):
                names = getattr(inner, "names", None)
                names = list(names.values()) if isinstance(names, Mapping) else names
                return _as_float(module_state_dict(inner)), "ultralytics", names
            if _is_state_dict(inner):
                return _as_float(inner), "checkpoint", None
    raise WeightsError(
        f"{path}: expected a state dict, a checkpoint with an 'ema'/'model' state dict, or a pickled "
        f"model; got {type(obj).__name__}"
        + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, Mapping) else "")
    )


def module_state_dict(module: Placeholder, prefix: str = "") -> dict[str, torch.Tensor]:
    """What ``nn.Module.state_dict()`` would return, read from a placeholder's pickled ``__dict__``."""
    out: dict[str, torch.Tensor] = {}
    non_persistent = module.__dict__.get("_non_persistent_buffers_set") or set()
    for name, p in (module.__dict__.get("_parameters") or {}).items():
        if p is not None:
            out[prefix + name] = p
    for name, b in (module.__dict__.get("_buffers") or {}).items():
        if b is not None and name not in non_persistent:
            out[prefix + name] = b
    for name, child in (module.__dict__.get("_modules") or {}).items():
        if isinstance(child, Placeholder):
            out.update(module_state_dict(child, f"{prefix}{name}."))
    return out


def _as_float(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Official checkpoints may be saved in half precision; integer buffers (num_batches_tracked) stay as they are.
    return {k: v.detach().float() if v.is_floating_point() else v.detach() for k, v in sd.items()}


def load_matching(model: nn.Module, path: str | Path, *, class_dependent: re.Pattern[str], expected: str) -> LoadReport:
    """Copy the weights of ``path`` into ``model``; keys matching ``class_dependent`` are skipped if their
    shape differs. ``expected`` completes the missing-keys error ("weights of the same YOLOv5 size")."""
    state, source, names = read_state_dict(path)
    report = LoadReport(str(path), source, class_names=names)
    target = model.state_dict()
    missing = [k for k in target if k not in state]
    if missing:
        raise WeightsError(
            f"{path}: {len(missing)} tensors of this model are missing from the file, first {missing[0]!r}; "
            f"expected {expected}"
        )
    to_load: dict[str, torch.Tensor] = {}
    for key, tensor in target.items():
        src = state[key]
        if src.shape == tensor.shape:
            to_load[key] = src
            report.loaded.append(key)
        elif class_dependent.match(key):
            report.skipped.append(key)
        else:
            raise WeightsError(
                f"{path}: {key} has shape {tuple(src.shape)} in the file, expected {tuple(tensor.shape)}: "
                "weights of another model size?"
            )
    report.unexpected = [k for k in state if k not in target]
    # Skipped keys keep the model's own (freshly initialised) values.
    model.load_state_dict({**target, **to_load}, strict=True)
    return report


def first_mismatch(target: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> str | None:
    """Where ``state`` (a file's tensors) does not fit ``target`` (a model's ``state_dict()``), in one line:
    the counts of missing, unexpected and reshaped tensors and the first of each. ``None`` when it fits.

    torch's ``load_state_dict`` error is a multi-line list whose first line ("Error(s) in loading
    state_dict for X:") says nothing; this is what a refusal prints instead."""
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    reshaped = [k for k in target if k in state and hasattr(state[k], "shape")
                and tuple(state[k].shape) != tuple(target[k].shape)]
    parts = []
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} tensor(s) of another shape, first {k} {tuple(state[k].shape)} in the file, "
                     f"{tuple(target[k].shape)} in the model")
    if missing:
        parts.append(f"{len(missing)} tensor(s) of the model missing from the file, first {missing[0]}")
    if unexpected:
        parts.append(f"{len(unexpected)} tensor(s) in the file unknown to the model, first {unexpected[0]}")
    return "; ".join(parts) or None
