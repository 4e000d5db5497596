"""ConvNeXt ImageNet checkpoints into ``convnext.ConvNeXt``: the official layout, and timm's names through a map.

Two layouts of the same tensors exist:

- official (facebookresearch/ConvNeXt, ``convnext_tiny_1k_224_ema.pth``): ``{"model": state_dict}`` with
  ``downsample_layers.{0..3}.{0,1}``, ``stages.{s}.{i}.dwconv|norm|pwconv1|pwconv2|gamma``, ``norm``,
  ``head``;
- timm (``timm/convnext_tiny.*``): ``stem.{0,1}``, ``stages.{s}.downsample.{0,1}`` (s >= 1),
  ``stages.{s}.blocks.{i}.conv_dw|norm|mlp.fc1|mlp.fc2|gamma``, ``head.norm``, ``head.fc``.

``timm_to_official`` renames the second into the first (the inverse of timm's own
``checkpoint_filter_fn``); ``load_convnext_backbone`` copies a checkpoint into the trunk, dropping and
reporting the classifier (``head.*`` and the pooled ``norm.*``), and initialising only the detection
out-norms (``norm1..3``), which no ImageNet checkpoint has. Anything else missing, extra (a deeper
variant) or of another shape is an error naming the file and the key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from detectors.weights import LoadReport, WeightsError

# Classifier tensors of an ImageNet checkpoint (official names): the pooled final norm and the linear head.
CLASSIFIER_KEY = re.compile(r"^(norm|head)\.")
# Trunk tensors the checkpoints never hold: the detection out-norms.
OUT_NORM_KEY = re.compile(r"^norm\d\.")

# timm name -> official name, applied in order to each key (each pattern anchored at the start).
_TIMM_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"^stem\.(\d+)\."), r"downsample_layers.0.\1."),
    (re.compile(r"^stages\.(\d+)\.downsample\.(\d+)\."), r"downsample_layers.\1.\2."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.conv_dw\."), r"stages.\1.\2.dwconv."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.mlp\.fc(\d)\."), r"stages.\1.\2.pwconv\3."),
    (re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\."), r"stages.\1.\2."),  # norm, gamma
    (re.compile(r"^head\.norm\."), "norm."),
    (re.compile(r"^head\.fc\."), "head."),
)


def is_timm_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return any(k.startswith("stem.") for k in state) or any(".blocks." in k for k in state)


def is_convnext_checkpoint(state: Mapping[str, torch.Tensor]) -> bool:
    """True for an official or timm ConvNeXt classification state dict (not a detector's)."""
    official = any(k.startswith("downsample_layers.0.0.") for k in state)
    timm = any(k.startswith("stem.0.") for k in state) and any(re.match(r"stages\.\d+\.blocks\.", k) for k in state)
    return official or timm


def timm_to_official(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's ConvNeXt key names -> the official ones (tensors unchanged, except a 1x1-conv MLP, timm's
    ``conv_mlp=True``, whose (O, I, 1, 1) weights become the official Linear's (O, I))."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        new = key
        for pattern, replacement in _TIMM_RULES:
            new, count = pattern.subn(replacement, new)
            if count:
                break
        if re.search(r"\.pwconv\d\.weight$", new) and tensor.dim() == 4:
            tensor = tensor.flatten(1)
        out[new] = tensor
    return out


@dataclass
class BackboneLoadReport(LoadReport):
    """``LoadReport`` of an ImageNet backbone checkpoint: ``unexpected`` lists the dropped classifier;
    ``initialised`` the model's tensors the file cannot have (out-norms, neck, head), left as built."""

    prefix: str = ""
    initialised: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"{self.path} ({self.source}): ConvNeXt ImageNet backbone, loaded {len(self.loaded)} tensors "
                 f"into {self.prefix or 'the backbone'}"]
        if self.unexpected:
            lines.append("  dropped (classifier, not used by a detector): " + ", ".join(self.unexpected))
        if self.initialised:
            lines.append(f"  kept their initialisation (not in an ImageNet checkpoint): {len(self.initialised)} "
                         f"tensors, e.g. {', '.join(self.initialised[:4])}")
        return "\n".join(lines)


def load_convnext_backbone(
    backbone: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, *, source: str = "checkpoint",
    prefix: str = "", others: tuple[str, ...] = (),
) -> BackboneLoadReport:
    """Copy ImageNet ConvNeXt weights ``state`` (official or timm names) into ``backbone`` (a ``ConvNeXt``).

    ``prefix`` is the backbone's name in the detector, used in the report; ``others`` the detector's other
    state keys, listed as kept at their initialisation. Raises ``WeightsError`` naming ``path`` and the
    first key when a trunk tensor is missing, of another shape, or the file has trunk tensors the model
    lacks (another ConvNeXt size).
    """
    timm = is_timm_layout(state)
    state = timm_to_official(state) if timm else dict(state)
    report = BackboneLoadReport(str(path), f"{source}, {'timm' if timm else 'official'} names", prefix=prefix)
    target = backbone.state_dict()
    trunk = {k: v for k, v in state.items() if not CLASSIFIER_KEY.match(k)}
    report.unexpected = sorted(k for k in state if CLASSIFIER_KEY.match(k))
    extra = [k for k in trunk if k not in target]
    if extra:
        raise WeightsError(f"{path}: {extra[0]} is not a tensor of this ConvNeXt "
                           f"(depths {getattr(backbone, 'depths', '?')}, dims {getattr(backbone, 'dims', '?')}): "
                           "weights of another ConvNeXt size?")
    to_load = {}
    for key, tensor in target.items():
        if key not in trunk:
            if OUT_NORM_KEY.match(key):
                report.initialised.append(prefix + key)
                continue
            raise WeightsError(f"{path}: {key} missing from the file; expected a ConvNeXt ImageNet checkpoint "
                               "(official 'model' state dict or timm names)")
        src = trunk[key]
        if src.shape != tensor.shape:
            raise WeightsError(f"{path}: {key} has shape {tuple(src.shape)} in the file, expected "
                               f"{tuple(tensor.shape)}: weights of another ConvNeXt size?")
        to_load[key] = src
        report.loaded.append(prefix + key)
    backbone.load_state_dict(to_load, strict=False)
    report.initialised += list(others)
    return report
