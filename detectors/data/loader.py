"""``build_dataloader``: samples -> batches of letterboxed images and YOLO-style targets.

Determinism: the sampler (in the main process) draws each epoch's order and one augmentation seed per
item from ``(seed, epoch)``; workers only apply them. So a batch's content depends on the seed and
the epoch, not on the number of workers or which worker got the item.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from detectors.config import AugmentConfig, DataConfig
from detectors.data.sample import Sample
from detectors.data.transforms import LetterboxMeta, boxes_to_targets, hflip, hsv_jitter, letterbox
from detectors.errors import DataFormatError


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, S, S) float32 in [0, 1], RGB
    targets: torch.Tensor  # (M, 6) float32 [image_index, class, cx, cy, w, h], normalised to S
    metas: list[LetterboxMeta]
    image_ids: list[int]

    def __len__(self) -> int:
        return len(self.image_ids)

    def pin_memory(self) -> Batch:
        """Called by ``DataLoader(pin_memory=True)`` for faster host-to-GPU copies."""
        return Batch(self.images.pin_memory(), self.targets.pin_memory(), self.metas, self.image_ids)

    def to(self, device, non_blocking: bool = False) -> Batch:
        return Batch(self.images.to(device, non_blocking=non_blocking),
                     self.targets.to(device, non_blocking=non_blocking), self.metas, self.image_ids)


def read_image(path) -> np.ndarray:
    """BGR uint8 (H, W, 3); a missing or unreadable file names its path."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataFormatError(f"{path}: image not found or not readable")
    return image


class DetectionDataset(Dataset):
    """Item ``(index, aug_seed)`` -> ``(CHW uint8 RGB tensor, (N, 5) targets, meta, image_id)``.

    ``aug_seed`` is ``None`` for no augmentation (evaluation).
    """

    def __init__(self, samples: list[Sample], img_size: int, augment: AugmentConfig | None) -> None:
        self.samples = samples
        self.img_size = img_size
        self.augment = augment

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, item):
        index, aug_seed = item if isinstance(item, tuple) else (item, None)
        sample = self.samples[index]
        image = read_image(sample.image_path)
        if image.shape[0] != sample.height or image.shape[1] != sample.width:
            raise DataFormatError(f"{sample.image_path}: image is {image.shape[1]}x{image.shape[0]}, "
                                  f"labels were read for {sample.width}x{sample.height}")
        # (mosaic would assemble image + boxes from four samples here, before the letterbox)
        image, meta = letterbox(image, self.img_size)
        boxes = meta.to_input(sample.boxes)
        if self.augment is not None and aug_seed is not None:
            rng = np.random.default_rng(aug_seed)
            image = hsv_jitter(image, rng, self.augment.hsv_h, self.augment.hsv_s, self.augment.hsv_v)
            if rng.random() < self.augment.hflip:
                image, boxes, meta = hflip(image, boxes, meta)
        targets = boxes_to_targets(boxes, sample.classes, meta.input_width, meta.input_height)
        chw = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))  # BGR HWC -> RGB CHW
        return torch.from_numpy(chw), torch.from_numpy(targets), meta, sample.image_id


class EpochSampler(Sampler):
    """Yields ``(index, aug_seed)``; every ``iter()`` is a new epoch with its own order and seeds."""

    def __init__(self, n: int, *, shuffle: bool, augment: bool, seed: int) -> None:
        self.n = n
        self.shuffle = shuffle
        self.augment = augment
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.n

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        seeds = rng.integers(0, 2**63 - 1, self.n)
        for i, index in enumerate(order.tolist()):
            yield index, (int(seeds[i]) if self.augment else None)


def collate(items) -> Batch:
    images, targets, metas, image_ids = zip(*items, strict=True)
    rows = [torch.cat([torch.full((len(t), 1), float(i)), t], 1) for i, t in enumerate(targets)]
    return Batch(
        images=torch.stack(images).float().div_(255.0),
        targets=torch.cat(rows, 0) if rows else torch.zeros((0, 6)),
        metas=list(metas),
        image_ids=list(image_ids),
    )


def _worker_init(_worker_id: int) -> None:
    cv2.setNumThreads(0)  # the DataLoader already runs one process per worker
    torch.set_num_threads(1)


def build_dataloader(data_cfg: DataConfig, samples: list[Sample], *, batch_size: int, augment: bool,
                     shuffle: bool, seed: int, workers: int | None = None, pin_memory: bool = False) -> DataLoader:
    """A ``DataLoader`` of ``Batch``es at input size ``data_cfg.img_size``.

    ``augment`` applies ``data_cfg.augment`` (HSV jitter, horizontal flip); ``workers`` defaults to
    ``data_cfg.workers`` (0 loads in the calling process).
    """
    workers = data_cfg.workers if workers is None else workers
    dataset = DetectionDataset(samples, data_cfg.img_size, data_cfg.augment if augment else None)
    sampler = EpochSampler(len(samples), shuffle=shuffle, augment=augment, seed=seed)
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
