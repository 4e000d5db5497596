"""The recipe in the loader: close_mosaic, determinism across workers, ignore regions in the batch."""

import numpy as np
import torch

from detectors.config import AugmentConfig, DataConfig
from detectors.data import build_dataloader, read_kitti
from detectors.data.loader import EpochSampler

CLASSES = ["Car", "Pedestrian", "Cyclist"]


def _cfg(root, augment, img_size=96):
    return DataConfig(format="kitti", root=str(root), img_size=img_size, workers=0, augment=augment)


def test_the_sampler_allows_mosaic_until_the_last_close_mosaic_epochs():
    sampler = EpochSampler(3, shuffle=True, augment=True, seed=0, mosaic_epochs=3)  # 5 epochs, close_mosaic 2
    flags = [{request.mosaic_allowed for request in sampler} for _ in range(5)]
    assert flags == [{True}, {True}, {True}, {False}, {False}]
    sampler.set_epoch(3)  # a resumed run asks for epoch 3 directly
    assert {request.mosaic_allowed for request in sampler} == {False}


def test_close_mosaic_turns_mosaic_off_in_the_last_epochs(synthetic_root):
    samples = read_kitti(synthetic_root, None, CLASSES)
    # Without mosaic and with no affine an image keeps its letterbox map; a mosaic has none.
    augment = AugmentConfig(mosaic=1.0, translate=0.0, scale=0.0, close_mosaic=2)
    loader = build_dataloader(_cfg(synthetic_root, augment), samples, batch_size=5, augment=True, shuffle=True,
                              seed=0, epochs=4)
    mosaic_per_epoch = [{meta is None for batch in loader for meta in batch.metas} for _ in range(4)]
    assert mosaic_per_epoch == [{True}, {True}, {False}, {False}]


def test_without_the_run_length_mosaic_stays_on(synthetic_root):
    samples = read_kitti(synthetic_root, None, CLASSES)
    loader = build_dataloader(_cfg(synthetic_root, AugmentConfig(close_mosaic=5)), samples, batch_size=10,
                              augment=True, shuffle=False, seed=0)
    assert all(meta is None for meta in next(iter(loader)).metas)


def test_mosaic_batches_are_the_same_with_zero_and_two_workers(synthetic_root):
    samples = read_kitti(synthetic_root, None, CLASSES)
    augment = AugmentConfig(mosaic=1.0, mixup=0.5, degrees=5.0, shear=2.0, flipud=0.5)

    def epochs(workers):
        loader = build_dataloader(_cfg(synthetic_root, augment), samples, batch_size=4, augment=True, shuffle=True,
                                  seed=7, workers=workers)
        return [[(b.image_ids, b.images, b.targets, b.ignore) for b in loader] for _ in range(2)]

    serial, parallel = epochs(0), epochs(2)
    assert len(serial[0]) == 3
    for epoch_a, epoch_b in zip(serial, parallel, strict=True):
        for (ids_a, *tensors_a), (ids_b, *tensors_b) in zip(epoch_a, epoch_b, strict=True):
            assert ids_a == ids_b
            for a, b in zip(tensors_a, tensors_b, strict=True):
                assert torch.equal(a, b)
    assert not torch.equal(serial[0][0][1], serial[1][0][1])  # a new epoch draws new mosaics
    assert sum(len(b[2]) for b in serial[0]) > 0  # boxes came through


def test_ignore_regions_reach_the_batch_in_input_pixels(make_kitti, kitti_line):
    root = make_kitti({"000000": kitti_line("Car", (10, 20, 50, 60)) + kitti_line("DontCare", (100, 10, 150, 40)),
                       "000001": kitti_line("DontCare", (0, 0, 20, 20))}, size=(200, 100))
    samples = read_kitti(root, "train", CLASSES)
    batch = next(iter(build_dataloader(_cfg(root, None, img_size=64), samples, batch_size=2, augment=False,
                                       shuffle=False, seed=0)))
    expected = [np.r_[i, batch.metas[i].to_input(s.ignore)[0]] for i, s in enumerate(samples)]
    np.testing.assert_allclose(batch.ignore.numpy(), expected, rtol=1e-6)
    # Under the mosaic recipe the regions travel too, each tagged with its image in the batch.
    loader = build_dataloader(_cfg(root, AugmentConfig(mosaic=1.0, scale=0.0), img_size=64), samples, batch_size=2,
                              augment=True, shuffle=False, seed=0)
    ignore = torch.cat([b.ignore for b in loader])
    assert len(ignore) > 0 and set(ignore[:, 0].tolist()) <= {0.0, 1.0}
    assert (ignore[:, 1:] >= 0).all() and (ignore[:, 1:] <= 64).all()


def test_yolox_recipe_after_close_mosaic_only_letterboxes_colours_and_flips():
    # YOLOX applies its affine only to mosaics, so its no-aug epochs see the letterboxed image (exact map back).
    from detectors.data.augment import LabelledImage, augment_sample, letterboxed, resolve_augment

    params = resolve_augment(None, {"mosaic": 1.0, "mixup": 1.0, "degrees": 10.0, "scale": [0.1, 2.0], "shear": 2.0,
                                    "affine_without_mosaic": False, "hsv_mode": "shift", "hsv_h": 5.0,
                                    "hsv_s": 30.0, "hsv_v": 30.0, "close_mosaic": 15})
    image = np.zeros((50, 100, 3), np.uint8)
    image[10:30, 20:60] = 200
    item = LabelledImage(image, [[20, 10, 60, 30]], [1], [[70, 5, 90, 45]])
    for seed in range(6):
        out, meta = augment_sample(0, np.random.default_rng(seed), load=lambda i: item, count=1, size=64,
                                   params=params, mosaic_allowed=False)
        assert meta is not None
        plain, _ = letterboxed(item, 64)
        np.testing.assert_allclose(meta.to_original(out.boxes), item.boxes, atol=1e-4)
        np.testing.assert_allclose(meta.to_original(out.ignore), item.ignore, atol=1e-4)
        assert out.image.shape == plain.image.shape
        _, mosaic_meta = augment_sample(0, np.random.default_rng(seed), load=lambda i: item, count=1, size=64,
                                        params=params, mosaic_allowed=True)
        assert mosaic_meta is None


def test_the_training_loader_logs_the_resolved_augmentation(synthetic_root, caplog):
    samples = read_kitti(synthetic_root, None, CLASSES)
    with caplog.at_level("INFO", logger="detectors.data.loader"):
        build_dataloader(_cfg(synthetic_root, AugmentConfig(mixup=0.25)), samples, batch_size=2, augment=True,
                         shuffle=True, seed=0, augment_defaults={"degrees": 3.0})
    assert "augmentation: mosaic 1.0, mixup 0.25, degrees 3.0, translate 0.1" in caplog.text
