"""``build_dataloader``: samples -> batches of letterboxed images and YOLO-style targets.

Determinism: the sampler (in the main process) draws each epoch's order and one augmentation seed per
item from ``(seed, epoch)``, and says whether mosaic is allowed in that epoch (``close_mosaic``);
workers only apply them. So a batch's content depends on the seed and the epoch, not on the number
of workers or which worker got the item. (A per-epoch switch on the dataset object would not reach
persistent workers, which hold their own copy; the sampler runs in the main process.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detectors.config import DataConfig
from detectors.data.augment import AugmentParams, LabelledImage, augment_sample, letterboxed, resolve_augment
from detectors.data.image_cache import ImageCache, build_image_cache
from detectors.data.image_file import read_image
from detectors.data.sample import Sample
from detectors.data.transforms import LetterboxMeta, boxes_to_targets, letterbox_meta
from detectors.errors import DataFormatError

log = logging.getLogger(__name__)


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, S, S) float32 in [0, 1], RGB
    targets: torch.Tensor  # (M, 6) float32 [image_index, class, cx, cy, w, h], normalised to S
    # The exact map back to each source image; None for an augmented image that has none (mosaic,
    # affine, up-down flip). Evaluation batches are never augmented, so they always have one.
    metas: list[LetterboxMeta | None]
    image_ids: list[int]  # a mosaic's id is that of the item it was built for
    # (K, 5) float32 [image_index, x1, y1, x2, y2] ignore regions (KITTI DontCare) in input pixels
    ignore: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 5)))

    def __len__(self) -> int:
        return len(self.image_ids)

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)`` for faster host-to-GPU copies."""
        return Batch(self.images.pin_memory(), self.targets.pin_memory(), self.metas, self.image_ids,
                     self.ignore.pin_memory())

    def to(self, device, non_blocking: bool = False) -> Batch:
        return Batch(self.images.to(device, non_blocking=non_blocking),
                     self.targets.to(device, non_blocking=non_blocking), self.metas, self.image_ids,
                     self.ignore.to(device, non_blocking=non_blocking))


class ItemRequest(NamedTuple):
    """What the sampler asks of the dataset for one item."""

    index: int
    aug_seed: int | None  # None: no augmentation (evaluation)
    mosaic_allowed: bool = True  # False in the last ``close_mosaic`` epochs


class DetectionDataset(Dataset):
    """Item ``ItemRequest`` (or a bare index) -> ``(CHW uint8 RGB tensor, (N, 5) targets, meta, image_id,
    (K, 4) ignore regions in input px)``.

    ``augment``: the resolved recipe, or ``None`` to only letterbox (evaluation). ``cache``: decoded
    images already resized for ``img_size`` (``data.cache``); ``load`` then returns them with the labels
    scaled alike, which every later stage treats as it treats an original (same pixels: the letterbox
    and mosaic's tiles resize to exactly that size, and then only pad), and each meta is re-based on the
    original image so that predictions still map back to original pixels.
    """

    def __init__(self, samples: list[Sample], img_size: int, augment: AugmentParams | None,
                 cache: ImageCache | None = None) -> None:
        self.samples = samples
        self.img_size = img_size
        self.augment = augment
        self.cache = cache

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> LabelledImage:
        """Sample ``index``'s image (BGR) with its labels, in original pixels (resized for the input
        size, labels scaled alike, when read from the cache)."""
        sample = self.samples[index]
        if self.cache is not None:
            meta = letterbox_meta(sample.width, sample.height, self.img_size)
            scale = np.array([meta.scale_x, meta.scale_y] * 2, np.float64)
            return LabelledImage(self.cache.image(index), (sample.boxes * scale).astype(np.float32), sample.classes,
                                 (sample.ignore * scale).astype(np.float32))
        image = read_image(sample.image_path)
        if image.shape[0] != sample.height or image.shape[1] != sample.width:
            raise DataFormatError(f"{sample.image_path}: image is {image.shape[1]}x{image.shape[0]}, "
                                  f"labels were read for {sample.width}x{sample.height}")
        return LabelledImage(image, sample.boxes, sample.classes, sample.ignore)

    def __getitem__(self, item):
        request = ItemRequest(*item) if isinstance(item, tuple) else ItemRequest(item, None)
        sample = self.samples[request.index]
        if self.augment is not None and request.aug_seed is not None:
            labelled, meta = augment_sample(request.index, np.random.default_rng(request.aug_seed), load=self.load,
                                            count=len(self.samples), size=self.img_size, params=self.augment,
                                            mosaic_allowed=request.mosaic_allowed,
                                            has_boxes=lambda i: len(self.samples[i].boxes) > 0)
        else:
            labelled, meta = letterboxed(self.load(request.index), self.img_size)
        if self.cache is not None and meta is not None:  # the same geometry, mapped to the original image
            meta = replace(letterbox_meta(sample.width, sample.height, self.img_size), flipped=meta.flipped)
            if request.aug_seed is None:  # evaluation: the labels exactly as without the cache
                labelled = LabelledImage(labelled.image, meta.to_input(sample.boxes), sample.classes,
                                         meta.to_input(sample.ignore))
        size = self.img_size
        targets = boxes_to_targets(labelled.boxes, labelled.classes, size, size)
        chw = np.ascontiguousarray(labelled.image[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
        return (torch.from_numpy(chw), torch.from_numpy(targets), meta, sample.image_id,
                torch.from_numpy(labelled.ignore))


class EpochSampler(Sampler):
    """Yields ``ItemRequest``s; every ``iter()`` is a new epoch with its own order and seeds.

    ``mosaic_epochs``: mosaic (and mixup) are allowed in epochs ``0 .. mosaic_epochs - 1`` (0-based);
    ``None`` allows them in every epoch.
    """

    def __init__(self, n: int, *, shuffle: bool, augment: bool, seed: int, mosaic_epochs: int | None = None) -> None:
        self.n = n
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.mosaic_epochs = mosaic_epochs
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        mosaic_allowed = self.mosaic_epochs is None or self.epoch < self.mosaic_epochs
        self.epoch += 1
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2**63 - 1, self.n)
        for i, index in enumerate(order.tolist()):
            yield ItemRequest(index, int(seeds[i]) if self.augment else None, mosaic_allowed)


def collate(items) -> Batch:
    images, targets, metas, image_ids, ignore = zip(*items, strict=True)
    rows = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, t in enumerate(targets)]
    ignore_rows = [torch.cat([torch.full((len(r), 1), float(i)), r], 1) for i, r in enumerate(ignore)]
    return Batch(
        images=torch.stack(images).float().div_(255.0),
        targets=torch.cat(rows, 0) if rows else torch.zeros((0, 6)),
        metas=list(metas),
        image_ids=list(image_ids),
        ignore=torch.cat(ignore_rows, 0) if ignore_rows else torch.zeros((0, 5)),
    )


def _worker_init(_worker_id: int) -> None:
    cv2.setNumThreads(0)  # the DataLoader already runs one process per worker
    torch.set_num_threads(1)


def build_dataloader(data_cfg: DataConfig, samples: list[Sample], *, batch_size: int, augment: bool,
                     shuffle: bool, seed: int, workers: int | None = None, pin_memory: bool = False,
                     epochs: int | None = None, augment_defaults: Mapping[str, Any] | None = None) -> DataLoader:
    """A ``DataLoader`` of ``Batch``es at input size ``data_cfg.img_size``.

    ``augment`` applies ``data_cfg.augment`` (mosaic, affine, mixup, HSV, flips) over
    ``augment_defaults`` (the family's ``Recipe.augment``); ``epochs``, the run's length, places the
    ``close_mosaic`` switch-off (without it mosaic stays on); ``workers`` defaults to
    ``data_cfg.workers`` (0 loads in the calling process).
    """
    workers = data_cfg.workers if workers is None else workers
    params = resolve_augment(data_cfg.augment, augment_defaults) if augment else None
    if params is not None:  # unset keys print as null in the config: say what this run uses
        log.info("augmentation: %s", params.summary())
    mosaic_epochs = epochs - params.close_mosaic if params is not None and epochs is not None else None
    # Built here, in the process that forks the workers: a RAM cache is shared copy-on-write.
    cache = build_image_cache(data_cfg.cache, samples, data_cfg.img_size)
    dataset = DetectionDataset(samples, data_cfg.img_size, params, cache)
    sampler = EpochSampler(len(samples), shuffle=shuffle, augment=augment, seed=seed, mosaic_epochs=mosaic_epochs)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers > 0 else None,
        persistent_workers=workers > 0,
        prefetch_factor=2 if workers > 0 else None,
    )
