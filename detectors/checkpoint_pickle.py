"""A restricted unpickler for the official checkpoints users already have, whatever the family.

Some checkpoints pickle whole objects: Ultralytics' YOLOv5 ``.pt`` holds ``models.yolo.DetectionModel``
with ``models.common.Conv``, ``torch.nn.Conv2d`` ...; others (Megvii's YOLOX ``.pth``) hold a state dict
beside training records that may include numpy scalars. Unpickling them normally imports and runs their
code (and a hostile file can run anything). Here every global the pickle names goes through
``RestrictedUnpickler.find_class``, which returns only:

- torch's own tensor rebuild functions and a few inert builtins (``OrderedDict``, ``set``, ...), and
  ``_codecs.encode`` limited to text encodings (protocol 2 pickles ``bytes`` with it);
- for classes of their code (``models.*``) and of ``torch.nn.modules.*``: an inert ``Placeholder``
  subclass of the same name that records the pickled state (``_parameters``, ``_buffers``,
  ``_modules``, ...) and has no behaviour;
- for a few harmless value types seen in training options (numpy scalars, paths): an inert ``Opaque``.

Anything else (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) raises ``RefusedGlobal``.
Storages are resolved by torch's wrapper around this unpickler and read from the zip records.
Pass this module as ``torch.load(..., pickle_module=checkpoint_pickle, weights_only=False)``;
``detectors.weights.read_state_dict`` does.
"""

from __future__ import annotations

import _compat_pickle
import collections
import io
import pickle
from typing import Any

import torch

# Torch functions a checkpoint legitimately calls while unpickling: rebuild tensors from storages.
_TORCH_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
}
for _dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.int64, torch.int32, torch.uint8):
    _TORCH_GLOBALS[("torch", str(_dtype).removeprefix("torch."))] = _dtype

# Modules whose classes become placeholders: Ultralytics' code (``models.`` from their repository,
# ``yolov5.models.`` from the PyPI ``yolov5`` package's train.py), meituan/YOLOv6's model and layer classes
# (``yolov6.models.yolo.Model``, ``yolov6.layers.common.RepVGGBlock`` ...) and torch.nn's module classes.
_PLACEHOLDER_PREFIXES = ("models.", "yolov5.models.", "yolov6.models.", "yolov6.layers.", "torch.nn.modules.")
# Harmless value types that appear in saved options/metrics (Ultralytics' opt, YOLOX's AP); read as Opaque.
_OPAQUE_GLOBALS = {
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "dtype"),
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("argparse", "Namespace"),
}


class RefusedGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allowlist; ``global_name`` is ``module.name``."""

    def __init__(self, global_name: str) -> None:
        super().__init__(f"refused global {global_name}")
        self.global_name = global_name


class Placeholder:
    """Stands in for a class of the checkpoint's code. Holds the pickled state; runs nothing."""

    pickled_module = ""
    pickled_name = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # only if the pickle calls the class
        self.__dict__["_pickled_args"] = args

    def __setstate__(self, state: Any) -> None:
        # nn.Module pickles its __dict__; a (dict, slots) pair is possible for other classes.
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            self.__dict__.update({k: v for k, v in state.items() if isinstance(k, str)})
        else:
            self.__dict__["_pickled_state"] = state

    def __repr__(self) -> str:
        return f"<placeholder {self.pickled_module}.{self.pickled_name}>"


class Opaque:
    """An inert value standing in for a harmless non-tensor object (numpy scalar, path, namespace)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


_placeholders: dict[tuple[str, str], type[Placeholder]] = {}


def placeholder_class(module: str, name: str) -> type[Placeholder]:
    """The (cached) inert class standing for ``module.name``."""
    key = (module, name)
    if key not in _placeholders:
        attrs = {"pickled_module": module, "pickled_name": name, "__module__": __name__}
        _placeholders[key] = type(name, (Placeholder,), attrs)
    return _placeholders[key]


def _reconstructor(cls: Any, base: Any, state: Any) -> Placeholder:
    """``copyreg._reconstructor`` (protocols 0/1), limited to placeholders: allocate, never call __init__."""
    if not (isinstance(cls, type) and issubclass(cls, Placeholder)):
        raise RefusedGlobal(f"copyreg._reconstructor of {cls!r}")
    return object.__new__(cls)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for ``bytes`` (numpy scalars' raw data): text codecs
    only, so no codec module outside the standard text encodings is looked up."""
    if not isinstance(text, str) or encoding.lower().replace("-", "").replace("_", "") not in ("latin1", "utf8"):
        raise RefusedGlobal(f"_codecs.encode with {type(text).__name__} and encoding {encoding!r}")
    return text.encode(encoding)


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        # Protocol < 3 pickles name Python 2 modules (__builtin__.set); map them as pickle itself does.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _TORCH_GLOBALS:
            return _TORCH_GLOBALS[key]
        if key == ("builtins", "object"):
            return object
        if key == ("copyreg", "_reconstructor"):
            return _reconstructor
        if key == ("_codecs", "encode"):
            return _latin1_encode
        if module.startswith(_PLACEHOLDER_PREFIXES) and name.isidentifier():
            return placeholder_class(module, name)
        if key in _OPAQUE_GLOBALS:
            return Opaque
        raise RefusedGlobal(f"{module}.{name}")


# torch.load(pickle_module=...) also calls ``pickle_module.load`` for legacy (pre-zip) files.
Unpickler = RestrictedUnpickler


def load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()
