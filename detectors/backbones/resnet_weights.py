"""Weights for the ResNet-FPN families: ImageNet ResNet-50, torchvision detector checkpoints, MMDetection names.

- ``load_imagenet_resnet50(body, path)``: torchvision's ImageNet ``resnet50`` checkpoint (a plain state
  dict: ``conv1.*``, ``bn1.*``, ``layer1..4.*``, ``fc.*``) into a ``ResNet`` (``resnet_fpn.body``). The
  classifier ``fc.*`` and stages the body does not build are skipped and reported;
  ``num_batches_tracked`` is dropped for ``FrozenBatchNorm2d`` (as torchvision's own loader does).
- ``load_detector_checkpoint(model, path, class_dependent=..., expected=..., translate=None)``:
  torchvision's ``load_state_dict(strict=True)`` for a detector checkpoint, except that tensors whose
  key matches ``class_dependent`` (the class-prediction layers) are skipped and reported when their
  shape differs (another class count). Any missing or extra tensor (another family) or other shape
  difference (another width) is one ``WeightsError`` naming the file and the first such tensor.
  An ImageNet ``resnet50`` file given to it goes into ``model.backbone.body`` (read once), so the
  families' loaders need no branch of their own.
- ``mmdet_resnet_fpn_key(key, fpn_levels=3)``: MMDetection's names for the ResNet + FPN part ->
  ours; families add their head's rules and pass both through ``rename_keys``.

Files are read by ``detectors.weights.read_state_dict``: ``torch.load(weights_only=True)`` first, pickles
through the restricted unpickler; a checkpoint dict's ``state_dict`` / ``model`` entry is used.

MMDetection's layout (``mmdet/models/backbones/resnet.py``, ``necks/fpn.py``): the ResNet has the same
module names as torchvision's (``conv1``, ``bn1`` = norm1, ``layer{i}.{j}.conv1..3/bn1..3``,
``downsample.0/1``) under ``backbone.``; the FPN's ``ConvModule``s keep their conv as ``.conv``:
``neck.lateral_convs.{i}.conv`` (1x1, from ``start_level``: i = 0 is C3 when start_level = 1, as
RetinaNet/FCOS) and ``neck.fpn_convs.{i}.conv`` (3x3), followed in ``fpn_convs`` by the extra stride-2
convs (``fpn_convs.{n}`` = P6, ``{n+1}`` = P7). Semantic differences a key map cannot fix (the family
chooses the matching model): ``style='caffe'`` ResNets stride on the 1x1 conv1 (``resnet50(style=
"caffe")``) and take BGR 0-255 minus the caffe mean; ``add_extra_convs='on_input'`` reads C5
(``LastLevelP6P7(2048, 256)``), ``'on_output'`` P5; without ``relu_before_extra_convs`` (MMDetection's
RetinaNet) P7 is computed from P6 without the ReLU torchvision applies; MMDetection's FPN ``num_outs=5``
without extra convs (Faster R-CNN) is torchvision's ``LastLevelMaxPool`` and has no tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

from torch import Tensor, nn

from detectors.weights import LoadReport, WeightsError, read_state_dict

KeyRule = Callable[[str], "str | None"]


def _drop_batch_counters(state: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    # BatchNorm2d checkpoints carry num_batches_tracked; FrozenBatchNorm2d has none (torchvision drops it).
    return {k: v for k, v in state.items() if not (k.endswith(".num_batches_tracked") and k not in target)}


def is_imagenet_resnet(state: dict[str, Tensor]) -> bool:
    """torchvision's ImageNet classifier checkpoint (``conv1.weight`` ... ``fc.weight``), not a detector's."""
    return "conv1.weight" in state and "fc.weight" in state


def load_imagenet_resnet50(body: nn.Module, path: str | Path) -> LoadReport:
    """torchvision's ImageNet resnet50 state dict into ``body`` (a ``ResNet``); see the module docstring."""
    return load_imagenet_state(body, *read_state_dict(path), path)


def load_imagenet_state(body: nn.Module, state: dict[str, Tensor], source: str, names: list[str] | None,
                        path: str | Path) -> LoadReport:
    """``load_imagenet_resnet50`` on a state dict already read (``read_state_dict``'s three values)."""
    if "backbone.body.conv1.weight" in state:
        raise WeightsError(f"{path}: a detector checkpoint (backbone.body.* keys), expected torchvision's ImageNet "
                           "resnet50 state dict (conv1.*, layer1.*, ..., fc.*); load it with the detector's weights")
    target = body.state_dict()
    state = _drop_batch_counters(state, target)
    report = LoadReport(str(path), source, class_names=names)
    missing = [k for k in target if k not in state]
    if missing:
        raise WeightsError(f"{path}: {len(missing)} tensors of the ResNet body are missing from the file, first "
                           f"{missing[0]!r}; expected torchvision's ImageNet resnet50 state dict")
    for key, tensor in target.items():
        if state[key].shape != tensor.shape:
            raise WeightsError(f"{path}: {key} has shape {tuple(state[key].shape)} in the file, expected "
                               f"{tuple(tensor.shape)}: weights of another ResNet width or depth?")
        report.loaded.append(key)
    report.skipped = [k for k in state if k not in target]  # fc.* (the classifier), stages not built
    body.load_state_dict({k: state[k] for k in target}, strict=True)
    return report


def load_detector_checkpoint(model: nn.Module, path: str | Path, *, class_dependent: re.Pattern[str], expected: str,
                             translate: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None) -> LoadReport:
    """A torchvision-layout detector checkpoint into ``model``, strictly but for the class-dependent layers.

    ``expected`` completes the error messages ("torchvision's fcos_resnet50_fpn layout");
    ``translate(state) -> state`` renames another code base's keys first (``rename_keys``). torchvision's
    ImageNet ``resnet50`` file (``is_imagenet_resnet``) goes into ``model.backbone.body`` only (its detection
    recipes' ``weights_backbone`` start); the file is read once either way.
    """
    state, source, names = read_state_dict(path)
    if is_imagenet_resnet(state):
        return load_imagenet_state(model.backbone.body, state, source, names, path)
    if translate is not None:
        state = translate(state)
    return load_state_strict(model, state, path, source=source, class_dependent=class_dependent,
                             expected=expected, class_names=names)


def load_state_strict(model: nn.Module, state: dict[str, Tensor], path: str | Path, *, source: str,
                      class_dependent: re.Pattern[str], expected: str,
                      class_names: list[str] | None = None) -> LoadReport:
    """``load_detector_checkpoint`` on a state dict already read (and renamed)."""
    target = model.state_dict()
    state = _drop_batch_counters(state, target)
    missing = [k for k in target if k not in state]
    if missing:
        raise WeightsError(f"{path}: {len(missing)} tensors of this model are missing from the file, first "
                           f"{missing[0]!r}; expected {expected}")
    extra = [k for k in state if k not in target]
    if extra:
        raise WeightsError(f"{path}: {len(extra)} tensors of the file are not in this model, first {extra[0]!r}; "
                           f"expected {expected}")
    report = LoadReport(str(path), source, class_names=class_names)
    to_load: dict[str, Tensor] = {}
    for key, tensor in target.items():
        src = state[key]
        if src.shape == tensor.shape:
            to_load[key] = src
            report.loaded.append(key)
        elif class_dependent.match(key):
            report.skipped.append(key)  # keeps the model's own initialisation (class-prior bias)
        else:
            raise WeightsError(f"{path}: {key} has shape {tuple(src.shape)} in the file, expected "
                               f"{tuple(tensor.shape)}: weights of another model size?")
    model.load_state_dict({**target, **to_load}, strict=True)
    return report


_MMDET_BACKBONE = re.compile(r"^backbone\.((conv1|bn1|layer[1-4])\..+)$")
_MMDET_LATERAL = re.compile(r"^neck\.lateral_convs\.(\d+)\.conv\.(weight|bias)$")
_MMDET_FPN_CONV = re.compile(r"^neck\.fpn_convs\.(\d+)\.conv\.(weight|bias)$")


def mmdet_resnet_fpn_key(key: str, *, fpn_levels: int = 3, prefix: str = "backbone.") -> str | None:
    """Our name for an MMDetection ResNet / FPN key (``backbone.*``, ``neck.*``), None for other keys.

    ``fpn_levels``: the FPN's backbone levels (3 for C3-C5 with start_level 1, 4 for Faster R-CNN's
    C2-C5); ``fpn_convs`` beyond them are the extra levels P6, P7. ``prefix`` is where the model holds
    its ``BackboneWithFPN`` (torchvision's detectors: ``backbone.``).
    """
    if (m := _MMDET_BACKBONE.match(key)) is not None:
        return f"{prefix}body.{m.group(1)}"
    if (m := _MMDET_LATERAL.match(key)) is not None:
        return f"{prefix}fpn.inner_blocks.{m.group(1)}.0.{m.group(2)}"
    if (m := _MMDET_FPN_CONV.match(key)) is not None:
        i, param = int(m.group(1)), m.group(2)
        if i < fpn_levels:
            return f"{prefix}fpn.layer_blocks.{i}.0.{param}"
        extra = ("p6", "p7")[i - fpn_levels] if i - fpn_levels < 2 else None
        return None if extra is None else f"{prefix}fpn.extra_blocks.{extra}.{param}"
    return None


def rename_keys(state: dict[str, Tensor], rules: Iterable[KeyRule], *,
                drop: Callable[[str], bool] = lambda k: k.endswith(".num_batches_tracked"),
                path: str | Path = "the state dict") -> dict[str, Tensor]:
    """Each key renamed by the first rule that knows it (returns a name); keys no rule knows keep their name
    (a strict load then names the first one). Keys for which ``drop`` is true are left out. Two keys
    landing on one name (a file mixing both layouts) is a ``WeightsError`` naming ``path``."""
    rules = tuple(rules)
    out: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in state.items():
        if drop(key):
            continue
        new = next((n for n in (rule(key) for rule in rules) if n is not None), key)
        if new in out:
            raise WeightsError(f"{path}: {origin[new]!r} and {key!r} both map to {new!r}; expected one layout "
                               "(MMDetection's or torchvision's names), not both")
        out[new], origin[new] = value, key
    return out


def is_mmdet_state(state: dict[str, Tensor]) -> bool:
    """MMDetection's detector layout: ``backbone.*`` beside ``neck.lateral_convs.*``."""
    return any(k.startswith("neck.lateral_convs.") for k in state) and any(k.startswith("backbone.") for k in state)

