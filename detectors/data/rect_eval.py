"""Rectangular evaluation batches (``eval.rect``): each batch letterboxed to its own minimal shape.

A square S x S input wastes most of its pixels on wide images (KITTI's 1242x375 fills 31 % of a 640
square). As Ultralytics' val does, images are sorted by aspect ratio, cut into batches, and each batch
is letterboxed to a stride-aligned (W, H) that holds every image of the batch at the scale the square
input would give it, ``min(S / w, S / h)``, plus half a stride of grey on each side, as Ultralytics' val
does (``ceil(side / stride + 0.5) * stride`` per side; a square image at 640 gets 672). So each image is
resized to exactly the pixels of the square letterbox (tested); only the grey padding shrinks. The half
stride matters: with the minimal shape a KITTI image at 320 px filled its 320x96 input edge to edge, and
two trained YOLOv5n models lost 13-15 % of their mAP (benchmarks/README.md, issue 13); objects at the
border need the context the padding gives.

Batches of ``Batch`` as ``build_dataloader`` makes for evaluation (unaugmented, exact ``LetterboxMeta``
per image), with the decoded-image cache (``detectors.data.image_cache``) read when given one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from detectors.data.image_cache import ImageCache
from detectors.data.sample import Sample
from detectors.data.transforms import PAD_VALUE, boxes_to_targets, letterbox, letterbox_meta
from detectors.errors import DataFormatError

STRIDE = 32  # YOLOv5's largest stride; input sides must be multiples of the detector's (Recipe.stride_multiple)
PAD = 0.5  # extra grey per side, in strides (Ultralytics' val: pad=0.5)


def rect_shape(sizes: list[tuple[int, int]], img_size: int, stride: int = STRIDE, pad: float = PAD
               ) -> tuple[int, int]:
    """The stride-aligned (W, H) holding images of ``sizes`` ((w, h) each) at the square's scale, each side
    ``ceil(resized side / stride + pad) * stride``."""
    width = height = 0
    for w, h in sizes:
        meta = letterbox_meta(w, h, img_size)
        width = max(width, round(w * meta.scale_x))
        height = max(height, round(h * meta.scale_y))
    return math.ceil(width / stride + pad) * stride, math.ceil(height / stride + pad) * stride


def rect_batches(samples: list[Sample], batch_size: int, img_size: int,
                 stride: int = STRIDE) -> list[tuple[list[int], tuple[int, int]]]:
    """``[(sample indices, (W, H)), ...]``: samples sorted by aspect ratio (h / w, stable), in batches."""
    order = sorted(range(len(samples)), key=lambda i: samples[i].height / samples[i].width)
    batches = []
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        shape = rect_shape([(samples[i].width, samples[i].height) for i in indices], img_size, stride)
        batches.append((indices, shape))
    return batches


class RectEvalDataset(Dataset):
    """Item ``(index, (W, H))`` -> ``(CHW uint8 RGB, (N, 5) targets normalised to (W, H), meta, image_id)``."""

    def __init__(self, samples: list[Sample], img_size: int, cache: ImageCache | None = None) -> None:
        self.samples = samples
        self.img_size = img_size
        self.cache = cache

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        index, shape = item
        sample = self.samples[index]
        meta = letterbox_meta(sample.width, sample.height, shape, fit=self.img_size)
        if self.cache is not None:  # already resized as letterbox would: only the padding is left
            resized = self.cache.image(index)
            image = np.full((meta.input_height, meta.input_width, 3), PAD_VALUE, np.uint8)
            image[meta.pad_y:meta.pad_y + resized.shape[0], meta.pad_x:meta.pad_x + resized.shape[1]] = resized
        else:
            from detectors.data.loader import read_image

            original = read_image(sample.image_path)
            if original.shape[0] != sample.height or original.shape[1] != sample.width:
                raise DataFormatError(f"{sample.image_path}: image is {original.shape[1]}x{original.shape[0]}, "
                                      f"labels were read for {sample.width}x{sample.height}")
            image, meta = letterbox(original, shape, fit=self.img_size)
        targets = boxes_to_targets(meta.to_input(sample.boxes), sample.classes, meta.input_width, meta.input_height)
        chw = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
        return torch.from_numpy(chw), torch.from_numpy(targets), meta, sample.image_id


class RectBatchSampler:
    """Yields each rect batch as a list of ``(index, (W, H))`` items."""

    def __init__(self, batches: list[tuple[list[int], tuple[int, int]]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for indices, shape in self.batches:
            yield [(i, shape) for i in indices]


def collate_rect(items):
    from detectors.data.loader import Batch

    images, targets, metas, image_ids = zip(*items, strict=True)
    rows = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, t in enumerate(targets)]
    return Batch(images=torch.stack(images).float().div_(255.0),
                 targets=torch.cat(rows, 0) if rows else torch.zeros((0, 6)),
                 metas=list(metas), image_ids=list(image_ids))


def build_rect_eval_loader(samples: list[Sample], *, img_size: int, batch_size: int, workers: int,
                           stride: int = STRIDE, cache: ImageCache | None = None,
                           pin_memory: bool = False) -> DataLoader:
    from detectors.data.loader import _worker_init

    return DataLoader(
        RectEvalDataset(samples, img_size, cache),
        batch_sampler=RectBatchSampler(rect_batches(samples, batch_size, img_size, stride)),
        num_workers=workers,
        collate_fn=collate_rect,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers > 0 else None,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )
