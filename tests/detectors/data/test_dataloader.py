import numpy as np
import pytest
import torch

from detectors.config import AugmentConfig, DataConfig
from detectors.data import Batch, build_dataloader, read_kitti
from detectors.data.synthetic import CLASSES


@pytest.fixture
def samples(synthetic_root):
    return read_kitti(synthetic_root, None, list(CLASSES))


# Flip and HSV only (no mosaic, no affine): every augmented image keeps an exact map to its source.
FLIP_HSV = AugmentConfig(mosaic=0.0, translate=0.0, scale=0.0)


def _cfg(synthetic_root, **kw):
    kw.setdefault("augment", FLIP_HSV)
    return DataConfig(format="kitti", root=str(synthetic_root), img_size=128, workers=0, **kw)


def _targets_to_original(batch: Batch, i: int) -> np.ndarray:
    t = batch.targets[batch.targets[:, 0] == i].numpy()
    s = batch.metas[i].input_width
    xyxy = np.stack([t[:, 2] - t[:, 4] / 2, t[:, 3] - t[:, 5] / 2, t[:, 2] + t[:, 4] / 2, t[:, 3] + t[:, 5] / 2], 1) * s
    return batch.metas[i].to_original(xyxy)


def test_batches_have_the_contract_shapes_and_ranges(synthetic_root, samples):
    loader = build_dataloader(_cfg(synthetic_root), samples, batch_size=4, augment=False, shuffle=False, seed=0)
    batches = list(loader)
    assert [len(b) for b in batches] == [4, 4, 2]
    b = batches[0]
    assert b.images.shape == (4, 3, 128, 128) and b.images.dtype == torch.float32
    assert b.images.min() >= 0.0 and b.images.max() <= 1.0
    assert b.targets.shape[1] == 6 and b.targets.dtype == torch.float32
    assert b.image_ids == [0, 1, 2, 3]
    assert b.targets.shape[0] == sum(len(samples[i].boxes) for i in range(4))
    assert set(b.targets[:, 0].tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert ((b.targets[:, 2:] >= 0) & (b.targets[:, 2:] <= 1)).all()


def test_targets_map_back_to_the_sample_boxes(synthetic_root, samples):
    loader = build_dataloader(_cfg(synthetic_root), samples, batch_size=5, augment=True, shuffle=True, seed=3)
    seen = 0
    for batch in loader:
        for i, image_id in enumerate(batch.image_ids):
            sample = samples[image_id]
            np.testing.assert_allclose(_targets_to_original(batch, i), sample.boxes, atol=1e-2)
            assert batch.metas[i].orig_width == sample.width
            seen += 1
    assert seen == len(samples)


def test_images_are_rgb(synthetic_root, samples):
    import cv2

    loader = build_dataloader(_cfg(synthetic_root), samples[:1], batch_size=1, augment=False, shuffle=False, seed=0)
    batch = next(iter(loader))
    meta = batch.metas[0]
    bgr = cv2.imread(str(samples[0].image_path))
    rgb = batch.images[0].permute(1, 2, 0).numpy()[meta.pad_y:meta.pad_y + 20, meta.pad_x:meta.pad_x + 20]
    small = cv2.resize(bgr, (round(bgr.shape[1] * meta.scale_x), round(bgr.shape[0] * meta.scale_y)),
                       interpolation=cv2.INTER_AREA)[:20, :20, ::-1] / 255.0
    np.testing.assert_allclose(rgb, small, atol=1e-6)


def test_augmented_batches_depend_on_seed_and_epoch_not_on_workers(synthetic_root, samples):
    def epochs(workers, seed):
        loader = build_dataloader(_cfg(synthetic_root), samples, batch_size=5, augment=True, shuffle=True,
                                  seed=seed, workers=workers)
        return [[(b.image_ids, b.images.sum().item(), [m.flipped for m in b.metas]) for b in loader]
                for _ in range(2)]

    serial = epochs(0, seed=1)
    assert serial == epochs(2, seed=1)
    assert serial[0] != serial[1]  # a new epoch reshuffles and re-augments
    assert serial != epochs(0, seed=2)
