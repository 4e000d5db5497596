"""LGD (Zhang et al., AAAI 2022) as a comparator: the label-guided "teacher" built from labels and the
student's own maps, trained alongside and dropped at inference. Math: ``losses/lgd.py``.

Read from megvii-research/LGD (``models/customized_detectors/dynamic_teacher/``, ``models/base_distillator.py``,
``train.py``) and written anew for any detector whose head can run on other maps (``model.forward_head``):

1. **Label encoder** (``LabelEncoder``, their ``LabelEncoder``): each object's descriptor (box in [-1, 1],
   one-hot class; ``losses.lgd.label_descriptors``) through a PointNet: a learned per-object k x k
   transform of the descriptor (``SpatialTransformer``, their STN without the identity shortcut), Linear
   k -> 64, a learned 64 x 64 feature transform, 64 -> 128 -> 1024, a max over the objects of the image
   (the set's global feature), and [64-d local, 1024-d global] -> D. LayerNorm without affine and ReLU
   after every layer, as theirs (their 1x1 Conv1d are Linear here).
2. **Inter-object relation adapter**: the student's head input at each level through a 3x3 conv + GroupNorm(1)
   + ReLU to D channels, mask-pooled inside each box (the appearance embedding); label embeddings through
   Linear + LayerNorm + ReLU; one multi-head attention over the batch's objects, masked to objects of the
   same image, shared by the levels. ``interaction: student_guided`` (their default ``stuGuided``): the
   appearance embeddings query the label embeddings; ``label_guided``: the reverse.
3. **Intra-object knowledge mapper**: each object's attended vector through a Linear, painted on its cells
   (``losses.lgd.render``), a 3x3 conv; with ``context_box`` the whole-image box's vector through its own
   Linear is added everywhere; ReLU; then their refinement (3x3 conv, GN(1), ReLU, 3x3 conv, GN(1), ReLU, 3x3
   conv, GN(1)), shared by the levels; a 1x1 conv to the level's channels where they differ from D (the
   reference's FPN levels all have D = 256 channels; a YOLO neck's do not).
4. The teacher map goes through the **student's own head** (``model.forward_head``) and the family's
   detection loss (their ``losses_tea``): that is what trains the label-guided teacher (and, through the
   head and the appearance embeddings unless ``detach_appearance``, the student too).
5. **Distillation**: the student's head input through an adapter (their ``SequentialConvs``: 3x3 convs with
   ReLU between, ``adapter_convs`` of them, per level here) and the detached teacher map, both instance
   normalised, MSE over all levels (``losses.lgd.lgd_distill_loss``) times ``weight``. During the first
   ``pre_distill_fraction`` of the epochs the student's side is detached (their ``PRE_NONDISTILL_ITERS``,
   30k of 180k iterations): the adapter and the teacher learn, the student gets no distillation gradient.

Not carried over: their ``PRE_FREEZE_STUDENT_BACKBONE_ITERS`` (the student's backbone gradients dropped
for the first iterations; a trainer concern, not the method's), the separate teacher optimizer (the
comparator's parameters join the student's SGD with the same hyperparameters, as their configs set both
alike), segmentation-mask descriptors, and their dummy 1-pixel box for an image without objects (here
such an image just has no instance vectors; with ``context_box`` it still has its whole-image box).

Size. LGD's modules are as wide as the neck: their D is the FPN's 256 channels. Here D is
``losses.lgd.hidden_dim``, by default the median head-input width (``hidden_dim``: 256 for YOLOv5s, the
paper's student, as for their FPNs; 128 for YOLOv5n). What does not scale with D, as in theirs: the label
encoder's PointNet widths (64 / 128 / 1024 and two spatial transformers, about 2.8 M parameters, run on the
T objects only, so almost no FLOPs) and the distillation adapters (three 3x3 convs at each level's own
width). YOLOv5n, D = 128: about 6.5 M training-only parameters, of which adapters 2.3 M and label encoder 2.9 M.

Terms: ``lgd`` = ``lgd/distill`` + ``lgd/teacher_gt`` (weighted: ``weight * L_distill``, ``teacher_weight *``
the teacher map's detection loss per image).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detectors.api import DetectorOutput
from detectors.comparators.base import Comparator, ComparatorContext
from detectors.distillation import targets_to_boxes
from detectors.errors import ConfigError
from losses.lgd import (
    inside_box_masks,
    label_descriptors,
    lgd_distill_loss,
    mask_pool,
    render,
    same_image_attention_mask,
)


def _norm_relu(x: Tensor) -> Tensor:
    # Their LayerNorm([C, 1], elementwise_affine=False) on (T, C, 1): a plain LayerNorm over the features.
    return F.relu(F.layer_norm(x, x.shape[-1:]))


class SpatialTransformer(nn.Module):
    """LGD's STN on one object at a time: (T, k) -> (T, k, k), k -> 64 -> 128 -> 1024 -> 512 -> 256 -> k * k."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k
        self.conv1, self.conv2, self.conv3 = nn.Linear(k, 64), nn.Linear(64, 128), nn.Linear(128, 1024)
        self.fc1, self.fc2, self.fc3 = nn.Linear(1024, 512), nn.Linear(512, 256), nn.Linear(256, k * k)

    def forward(self, x: Tensor) -> Tensor:
        # Their max over the point axis is over a length-1 axis (one object per "cloud"): the identity.
        for layer in (self.conv1, self.conv2, self.conv3, self.fc1, self.fc2):
            x = _norm_relu(layer(x))
        return self.fc3(x).view(-1, self.k, self.k)


class LabelEncoder(nn.Module):
    """Label descriptors (T, k) of a batch -> label embeddings (T, dim), with a per-image global feature."""

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        self.stn_desc = SpatialTransformer(k)
        self.stn_feat = SpatialTransformer(64)
        self.conv1, self.conv2, self.conv3 = nn.Linear(k, 64), nn.Linear(64, 128), nn.Linear(128, 1024)
        self.conv4 = nn.Linear(64 + 1024, dim)

    def forward(self, descriptors: Tensor, batch_index: Tensor, batch_size: int) -> Tensor:
        x = torch.bmm(descriptors[:, None, :], self.stn_desc(descriptors))[:, 0]  # row vector times k x k
        x = _norm_relu(self.conv1(x))
        local = torch.bmm(x[:, None, :], self.stn_feat(x))[:, 0]  # (T, 64)
        x = _norm_relu(self.conv3(_norm_relu(self.conv2(local))))  # (T, 1024)
        index = batch_index[:, None].expand_as(x)
        pooled = x.new_full((batch_size, x.shape[1]), float("-inf")).scatter_reduce(
            0, index, x, reduce="amax", include_self=False)  # per-image max; images without rows never read
        return _norm_relu(self.conv4(torch.cat([local, pooled[batch_index]], dim=1)))


class LabelGuidedTeacher(nn.Module):
    """Labels + the student's head inputs -> one teacher map per level, shaped like the head inputs."""

    def __init__(self, channels: dict[int, int], num_classes: int, *, dim: int, heads: int, interaction: str,
                 context_box: bool, detach_appearance: bool) -> None:
        super().__init__()
        self.strides = tuple(sorted(channels))
        self.num_classes = num_classes
        self.interaction = interaction
        self.context_box = context_box
        self.detach_appearance = detach_appearance
        self.label_encoder = LabelEncoder(4 + num_classes, dim)
        self.label_proj = nn.Linear(dim, dim)  # their canoni_proj_1D (+ LayerNorm, ReLU)
        self.student_proj = nn.ModuleDict({  # their student_proj_2D, per level: C_s -> D
            str(s): nn.Sequential(nn.Conv2d(c, dim, 3, 1, 1), nn.GroupNorm(1, dim, affine=False), nn.ReLU())
            for s, c in channels.items()})
        self.attention = nn.MultiheadAttention(dim, heads)
        self.instance_proj_1d = nn.Linear(dim, dim)
        self.instance_proj_2d = nn.Conv2d(dim, dim, 3, 1, 1)
        self.context_proj_1d = nn.Linear(dim, dim) if context_box else None
        self.refine = nn.Sequential(
            nn.Conv2d(dim, dim, 3, 1, 1), nn.GroupNorm(1, dim, affine=False), nn.ReLU(),
            nn.Conv2d(dim, dim, 3, 1, 1), nn.GroupNorm(1, dim, affine=False), nn.ReLU(),
            nn.Conv2d(dim, dim, 3, 1, 1), nn.GroupNorm(1, dim, affine=False))
        self.to_level = nn.ModuleDict({str(s): nn.Conv2d(dim, c, 1) if c != dim else nn.Identity()
                                       for s, c in channels.items()})

    def forward(self, features: dict[int, Tensor], boxes: Tensor, classes: Tensor, batch_index: Tensor,
                img_size: tuple[int, int]) -> dict[int, Tensor]:
        batch_size = features[self.strides[0]].shape[0]
        descriptors, index, is_context, boxes = label_descriptors(
            boxes, classes, batch_index, batch_size, img_size, self.num_classes, context_box=self.context_box)
        labels = None
        if descriptors.shape[0]:
            labels = _norm_relu(self.label_proj(self.label_encoder(descriptors, index, batch_size)))
            blocked = same_image_attention_mask(index)
        instance = ~is_context
        maps = {}
        for s in self.strides:
            feature = features[s].detach() if self.detach_appearance else features[s]
            size = tuple(feature.shape[-2:])
            raw = feature.new_zeros(batch_size, self.instance_proj_2d.in_channels, *size)
            if labels is not None:
                masks = inside_box_masks(boxes, s, size)
                appearance = mask_pool(self.student_proj[str(s)](feature), masks, index)  # (T, D)
                query, key = (appearance, labels) if self.interaction == "student_guided" else (labels, appearance)
                related = self.attention(query[:, None], key[:, None], key[:, None], attn_mask=blocked,
                                         need_weights=False)[0][:, 0]  # (T, D)
                raw = render(self.instance_proj_1d(related[instance]), masks[instance], index[instance],
                             batch_size, size)
                raw = self.instance_proj_2d(raw)
                if self.context_proj_1d is not None:  # one context row per image, in image order
                    raw = raw + self.context_proj_1d(related[is_context])[:, :, None, None]
            else:
                raw = self.instance_proj_2d(raw)  # no object in the batch: the conv's bias alone
            maps[s] = self.to_level[str(s)](self.refine(F.relu(raw)))
        return maps


class LGDComparator(Comparator):
    name = "lgd"
    term_names = ("lgd", "lgd/distill", "lgd/teacher_gt")
    needs_teacher = False

    def __init__(self, cfg: Any, *, channels: dict[int, int], num_classes: int, head: Any, detection_loss: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.strides = tuple(sorted(int(s) for s in channels))
        self.hidden_dim = hidden_dim(cfg, channels)
        self.teacher = LabelGuidedTeacher(
            {int(s): int(c) for s, c in channels.items()}, num_classes, dim=self.hidden_dim, heads=cfg.heads,
            interaction=cfg.interaction, context_box=cfg.context_box, detach_appearance=cfg.detach_appearance)
        self.adapters = nn.ModuleDict({str(s): _adapter(int(channels[s]), cfg.adapter_convs) for s in self.strides})
        # The student's head and loss: plain attributes (the detector is never a submodule of this module).
        object.__setattr__(self, "_head", head)
        object.__setattr__(self, "_detection_loss", detection_loss)
        self.distilling = True  # False during the pre-distillation epochs (start_epoch)

    def start_epoch(self, epoch: int, epochs: int | None = None) -> None:
        """Epochs 1 .. floor(pre_distill_fraction * epochs) detach the student's side of the distillation.

        The trainer's epoch hook reaches here through ``MethodDistillation.start_epoch``."""
        pre = int(self.cfg.pre_distill_fraction * epochs) if epochs else 0
        self.distilling = int(epoch) > pre

    def forward(self, output: Any, targets: Tensor, img_size: int | tuple[int, int], *,
                images: Tensor | None = None, teacher_output: Any = None) -> dict[str, Tensor]:
        features = {s: output.head_inputs[s] for s in self.strides}
        reference = features[self.strides[0]]
        targets = targets.to(reference.device)
        boxes, batch_index = targets_to_boxes(targets, img_size)
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        teacher_maps = self.teacher(features, boxes, targets[:, 1].long(), batch_index, size)
        teacher_head = self._head(teacher_maps)
        teacher_gt, _items = self._detection_loss(DetectorOutput(teacher_head, {}, {}, teacher_maps), targets)
        students = [self.adapters[str(s)](f if self.distilling else f.detach()) for s, f in features.items()]
        distill = self.cfg.weight * lgd_distill_loss(students, [teacher_maps[s] for s in self.strides])
        teacher_gt = self.cfg.teacher_weight * teacher_gt
        return {"lgd": distill + teacher_gt, "lgd/distill": distill.detach(), "lgd/teacher_gt": teacher_gt.detach()}


def hidden_dim(cfg: Any, channels: dict[int, int]) -> int:
    """D: ``losses.lgd.hidden_dim``, or (null) the median of the student's head-input channels (the upper
    middle for an even count). LGD's FPNs have 256 channels at every level, and D = 256 there; a YOLO neck
    widens with the stride (YOLOv5n 64/128/256, YOLOv5s 128/256/512), so D follows the student's size."""
    if cfg.hidden_dim is not None:
        return int(cfg.hidden_dim)
    widths = sorted(int(c) for c in channels.values())
    dim = widths[len(widths) // 2]
    if dim % cfg.heads:
        raise ConfigError(f"losses.lgd.heads: must divide the hidden dim {dim} (the median of the student's "
                          f"head-input channels {widths}), got {cfg.heads}; or set losses.lgd.hidden_dim")
    return dim


def _adapter(channels: int, convs: int) -> nn.Sequential:
    """Their SequentialConvs: ``convs`` 3x3 convs, channels -> channels, ReLU between them."""
    layers: list[nn.Module] = []
    for i in range(convs):
        layers.append(nn.Conv2d(channels, channels, 3, 1, 1))
        if i < convs - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def build(losses_cfg: Any, context: ComparatorContext) -> LGDComparator:
    cfg, model = losses_cfg.lgd, context.model
    head = getattr(model, "forward_head", None)
    if head is None:
        raise ConfigError(f"losses.method: lgd runs the detector's head on its teacher maps; "
                          f"{type(model).__name__} has no forward_head(head_inputs)")
    if context.build_loss is None:
        raise ConfigError("losses.method: lgd trains its teacher with the family's detection loss; build it "
                          "with detectors.distillation.build_distillation_for (a run config)")
    return LGDComparator(cfg, channels=dict(model.head_input_channels), num_classes=int(model.num_classes),
                         head=head, detection_loss=context.build_loss(model))
