"""RoIAlign over an FPN: each RoI pooled from the level its size selects (FPN paper, Lin et al. 2017, eq. 1).

``MultiScaleRoIAlign`` is torchvision's (ops/poolers.py) in behaviour: level
``k = floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps)`` clamped to the pyramid's
``[k_min, k_max]`` (``k = log2(stride)``), then ``roi_align`` on that level with ``spatial_scale = 1 / stride``
and ``aligned=False`` (``aligned=True`` is offered for MMDetection-trained heads, whose RoIAlign is aligned).
Areas are ``(x2 - x1) * (y2 - y1)`` unclamped, as torchvision's ``box_area``.

The feature dict may be keyed by stride (this project's FPN maps) or by torchvision's names ("0", "1", ...).
Scales come from ``image_shapes`` when given, exactly as torchvision infers them (``2 ** round(log2(feature
size / largest image size))`` on the height), else from the integer stride keys. Unlike torchvision the
scales are not cached from the first call, so a later batch of another size is pooled at its own scales.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import nn

from detectors.ops.roi_align import _pair, boxes_to_rois, roi_align


def fpn_levels(
    boxes: list[torch.Tensor],
    k_min: int,
    k_max: int,
    canonical_scale: int = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Pyramid level index (0 = finest, ``k - k_min``) of each box of the concatenated per-image lists."""
    cat = torch.cat(boxes)
    s = torch.sqrt((cat[:, 2] - cat[:, 0]) * (cat[:, 3] - cat[:, 1]))
    # (level + log2) + eps in that order, eps as a tensor of s's dtype: torchvision's float rounding.
    target = torch.floor(canonical_level + torch.log2(s / canonical_scale) + torch.tensor(eps, dtype=s.dtype))
    target = torch.clamp(target, min=k_min, max=k_max)
    return target.to(torch.int64) - k_min


def _inferred_scale(feature: torch.Tensor, image_shapes: Sequence[tuple[int, int]]) -> float:
    # torchvision's _infer_scale on the largest image height (its possible_scales[0]).
    approx = float(feature.shape[-2]) / float(max(shape[0] for shape in image_shapes))
    return 2 ** float(torch.tensor(approx).log2().round())


class MultiScaleRoIAlign(nn.Module):
    """Pools (L, C, PH, PW) from the levels ``featmap_names`` of a feature dict; no parameters."""

    def __init__(
        self,
        featmap_names: Sequence[Hashable],
        output_size: int | tuple[int, int],
        sampling_ratio: int,
        *,
        canonical_scale: int = 224,
        canonical_level: int = 4,
        eps: float = 1e-6,
        aligned: bool = False,
    ) -> None:
        super().__init__()
        if not featmap_names:
            raise ValueError("MultiScaleRoIAlign: featmap_names must name at least one level")
        self.featmap_names = list(featmap_names)
        self.output_size = _pair(output_size)
        self.sampling_ratio = sampling_ratio
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level
        self.eps = eps
        self.aligned = aligned

    def scales(
        self,
        features: list[torch.Tensor],
        keys: list[Hashable],
        image_shapes: Sequence[tuple[int, int]] | None,
    ) -> list[float]:
        if image_shapes:
            return [_inferred_scale(f, image_shapes) for f in features]
        if not all(isinstance(k, int) and k > 0 for k in keys):
            raise ValueError(
                f"MultiScaleRoIAlign: feature keys {keys} are not strides; pass image_shapes to infer the scales"
            )
        return [1.0 / k for k in keys]

    def forward(
        self,
        x: dict[Hashable, torch.Tensor],
        boxes: list[torch.Tensor],
        image_shapes: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """``x``: level -> (N, C, h, w); ``boxes``: N per-image (Li, 4) xyxy in image pixels -> (sum Li, C, PH, PW)."""
        keys = [k for k in x if k in self.featmap_names]  # x's order, as torchvision's _filter_input
        if not keys:
            raise ValueError(
                f"MultiScaleRoIAlign: none of {self.featmap_names} among the feature keys {list(x)}"
            )
        features = [x[k] for k in keys]
        scales = self.scales(features, keys, image_shapes)
        rois = boxes_to_rois(boxes)
        kwargs = dict(output_size=self.output_size, sampling_ratio=self.sampling_ratio, aligned=self.aligned)
        if len(features) == 1:
            return roi_align(features[0], rois, spatial_scale=scales[0], **kwargs)
        # float32 log2 then int(), as torchvision's _setup_scales
        k_min = int(-torch.log2(torch.tensor(scales[0], dtype=torch.float32)).item())
        k_max = int(-torch.log2(torch.tensor(scales[-1], dtype=torch.float32)).item())
        levels = fpn_levels(boxes, k_min, k_max, self.canonical_scale, self.canonical_level, self.eps)
        first = features[0]
        result = first.new_zeros((rois.shape[0], first.shape[1], *self.output_size))
        for level, (feature, scale) in enumerate(zip(features, scales, strict=True)):
            index = torch.where(levels == level)[0]
            pooled = roi_align(feature, rois[index], spatial_scale=scale, **kwargs)
            result = result.index_copy(0, index, pooled.to(result.dtype))
        return result

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )
