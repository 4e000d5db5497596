"""Check our augmentation geometry against Ultralytics YOLOv5's own code (PyPI ``yolov5`` 7.0.14), by running both.

    .venv/bin/pip install --no-deps --target /tmp/y5site yolov5-7.0.14-py37.py38.py39.py310-none-any.whl
    .venv/bin/python benchmarks/verify_augment_parity.py --site /tmp/y5site [--cases 200]
    .venv/bin/python benchmarks/verify_augment_parity.py --site /tmp/y5site --yolox-src /tmp/yolox-src  # + YOLOX

``--yolox-src`` is a folder holding Megvii-BaseDetection/YOLOX's ``yolox`` package (a source checkout);
its ``data_augment.py`` and ``datasets/mosaicdetection.py`` are loaded with their package ``__init__``
files bypassed and ``torchvision``, ``psutil`` and ``loguru`` stubbed when missing.

Their code is imported at run time from ``--site`` (never copied here), with the same inert stubs for
their unused heavy imports as ``verify_ultralytics_parity.py``. Their functions draw from Python's
``random``; we swap their module's ``random`` for a recording ``random.Random`` so that every draw they
make is known, then feed the same draws to ours (``AffineDraw``, the mosaic centre and tile order):

1. ``random_perspective`` (the non-mosaic path, border 0) on random images and boxes, with YOLOv5's
   scratch-low ranges and with rotation, shear and perspective on: the warped image, the boxes and
   which boxes ``box_candidates`` keeps.
2. ``LoadImagesAndLabels.load_mosaic`` (mosaic + its random affine, border -S/2) called on a stand-in
   dataset whose ``load_image`` returns already-resized tiles (so both sides start from the same
   pixels; tile resizing is not compared: we resize with area averaging, they with bilinear).
3. ``mixup``'s blend at their Beta(32, 32) ratio.
4. (with ``--yolox-src``) YOLOX's ``random_affine`` on 2S mosaic canvases against ours in style
   ``yolox``, and ``MosaicDetection.mixup`` against ``mixup_yolox``.

Exits non-zero if any comparison exceeds its tolerance.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import types
from pathlib import Path

import numpy as np

from detectors.data.augment import AffineDraw, LabelledImage, apply_affine, blend, mixup_yolox, place_mosaic

sys.path.insert(0, str(Path(__file__).parent))
from verify_ultralytics_parity import STUB_ROOTS, _StubFinder  # noqa: E402  (their import stubs)

BOX_TOL = 1e-3  # px: their labels go through float64 xywh-normalised conversions, ours float32 xyxy
PIXEL_TOL = 1  # grey levels: the same OpenCV warp, matrices equal to rounding


class RecordingRandom(random.Random):
    """``random.Random`` that logs every ``uniform`` draw and the list each ``shuffle`` produced."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.uniforms: list[float] = []
        self.shuffled: list[list] = []
        self.randints: list[int] = []

    def uniform(self, a, b):
        value = super().uniform(a, b)
        self.uniforms.append(value)
        return value

    def shuffle(self, x):
        super().shuffle(x)
        self.shuffled.append(list(x))

    def randint(self, a, b):
        value = super().randint(a, b)
        self.randints.append(value)
        return value


def import_theirs(site: Path):
    package_dir = site / "yolov5"
    if not (package_dir / "utils" / "augmentations.py").is_file():
        sys.exit(f"--site {site}: no yolov5/utils/augmentations.py there; install the wheel first:\n"
                 f"  .venv/bin/pip install --no-deps --target {site} yolov5-7.0.14-py37.py38.py39.py310-none-any.whl")
    sys.path.insert(0, str(site))
    missing = {root for root in STUB_ROOTS if importlib.util.find_spec(root) is None}
    sys.meta_path.insert(0, _StubFinder(missing))
    package = types.ModuleType("yolov5")
    package.__path__ = [str(package_dir)]
    sys.modules["yolov5"] = package
    from yolov5.utils import augmentations, dataloaders

    return augmentations, dataloaders


def draw_from(uniforms: list[float]) -> AffineDraw:
    """Their 8 draws, in random_perspective's order: perspective x, y, angle, scale, shear x, y, translate x, y."""
    px, py, angle, scale, shear_x, shear_y, tx, ty = uniforms
    return AffineDraw(angle=angle, scale=scale, shear_x=shear_x, shear_y=shear_y, centre_x=tx, centre_y=ty,
                      perspective_x=px, perspective_y=py)


def random_boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    x1 = rng.uniform(0, width * 0.9, n)
    y1 = rng.uniform(0, height * 0.9, n)
    return np.stack([x1, y1, np.minimum(x1 + rng.uniform(2, width / 3, n), width),
                     np.minimum(y1 + rng.uniform(2, height / 3, n), height)], 1)


RANGES = {
    "scratch-low": dict(degrees=0.0, translate=0.1, scale=0.5, shear=0.0, perspective=0.0),
    "rotate+shear+perspective": dict(degrees=10.0, translate=0.2, scale=0.9, shear=5.0, perspective=0.0005),
}


def compare(name: str, theirs_img, theirs_labels, ours: LabelledImage, worst: dict) -> None:
    pixel = int(np.abs(theirs_img.astype(int) - ours.image.astype(int)).max())
    if len(theirs_labels) != len(ours.boxes):
        raise SystemExit(f"{name}: they keep {len(theirs_labels)} boxes, we keep {len(ours.boxes)}")
    box = float(np.abs(theirs_labels[:, 1:5] - ours.boxes).max()) if len(ours.boxes) else 0.0
    if not np.array_equal(theirs_labels[:, 0].astype(int), ours.classes):
        raise SystemExit(f"{name}: classes differ")
    worst["pixel"] = max(worst["pixel"], pixel)
    worst["box"] = max(worst["box"], box)
    worst["boxes"] += len(ours.boxes)
    if pixel > PIXEL_TOL or box > BOX_TOL:
        raise SystemExit(f"{name}: max pixel diff {pixel}, max box diff {box:.2e} px")


def check_perspective(augmentations, cases: int) -> None:
    for label, ranges in RANGES.items():
        worst = {"pixel": 0, "box": 0.0, "boxes": 0, "given": 0}
        for case in range(cases):
            rng = np.random.default_rng(case)
            h, w = int(rng.integers(64, 320)), int(rng.integers(64, 320))
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            boxes = random_boxes(rng, int(rng.integers(0, 12)), w, h)
            classes = rng.integers(0, 3, len(boxes))
            recorder = RecordingRandom(case)
            augmentations.random = recorder
            targets = np.concatenate([classes[:, None].astype(float), boxes], 1)
            their_img, their_labels = augmentations.random_perspective(image.copy(), targets.copy(), **ranges)
            ours = apply_affine(LabelledImage(image, boxes, classes), draw_from(recorder.uniforms), (w, h))
            worst["given"] += len(boxes)
            compare(f"random_perspective[{label}] case {case}", their_img, their_labels, ours, worst)
        print(f"random_perspective, {label}: {cases} images, {worst['given']} boxes in, {worst['boxes']} kept by both; "
              f"max |pixel diff| {worst['pixel']}, max |box diff| {worst['box']:.1e} px")


class StandIn:
    """The attributes ``load_mosaic`` reads from a ``LoadImagesAndLabels``, over pre-resized tiles."""

    def __init__(self, tiles: list[np.ndarray], labels: list[np.ndarray], size: int, hyp: dict) -> None:
        self.tiles, self.labels, self.img_size, self.hyp = tiles, labels, size, hyp
        self.mosaic_border = [-size // 2, -size // 2]
        self.indices = range(len(tiles))
        self.segments = [[] for _ in tiles]

    def load_image(self, i):
        tile = self.tiles[i]
        return tile, tile.shape[:2], tile.shape[:2]


def check_mosaic(dataloaders, augmentations, cases: int, size: int = 128) -> None:
    for label, ranges in RANGES.items():
        worst = {"pixel": 0, "box": 0.0, "boxes": 0}
        hyp = {**ranges, "copy_paste": 0.0}
        for case in range(cases):
            rng = np.random.default_rng(10_000 + case)
            tiles, labels, ours_tiles = [], [], []
            for _ in range(6):
                long_w = bool(rng.integers(0, 2))
                short = int(rng.integers(size // 3, size + 1))
                w, h = (size, short) if long_w else (short, size)  # longer side = size, as load_image gives
                image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                boxes = random_boxes(rng, int(rng.integers(0, 6)), w, h)
                classes = rng.integers(0, 3, len(boxes))
                xywhn = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2 / w, (boxes[:, 1] + boxes[:, 3]) / 2 / h,
                                  (boxes[:, 2] - boxes[:, 0]) / w, (boxes[:, 3] - boxes[:, 1]) / h], 1)
                tiles.append(image)
                labels.append(np.concatenate([classes[:, None].astype(float), xywhn], 1).astype(np.float32))
                ours_tiles.append(LabelledImage(image, boxes, classes))
            recorder = RecordingRandom(case)
            dataloaders.random = recorder
            augmentations.random = recorder
            stand_in = StandIn(tiles, labels, size, hyp)
            their_img, their_labels = dataloaders.LoadImagesAndLabels.load_mosaic(stand_in, 0)
            yc, xc = (int(v) for v in recorder.uniforms[:2])
            order = recorder.shuffled[0]
            canvas = place_mosaic([ours_tiles[i] for i in order], (xc, yc), size)
            ours = apply_affine(canvas, draw_from(recorder.uniforms[2:]), (size, size))
            compare(f"load_mosaic[{label}] case {case}", their_img, their_labels, ours, worst)
        print(f"load_mosaic + random_perspective, {label}: {cases} mosaics at {size} px, {worst['boxes']} boxes kept "
              f"by both; max |pixel diff| {worst['pixel']}, max |box diff| {worst['box']:.1e} px")


def check_mixup(augmentations, cases: int) -> None:
    worst, differing = 0, 0.0
    for case in range(cases):
        rng = np.random.default_rng(20_000 + case)
        a, b = (rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2))
        la, lb = np.array([[0, 1, 2, 3, 4]], float), np.array([[1, 5, 6, 7, 8]], float)
        np.random.seed(case)
        their_img, their_labels = augmentations.mixup(a, la, b, lb)
        np.random.seed(case)
        ratio = np.random.beta(32.0, 32.0)
        ours = blend(LabelledImage(a, la[:, 1:], [0]), LabelledImage(b, lb[:, 1:], [1]), ratio)
        diff = np.abs(their_img.astype(int) - ours.image.astype(int))
        worst, differing = max(worst, int(diff.max())), max(differing, float((diff > 0).mean()))
        if not np.array_equal(their_labels[:, 1:], ours.boxes) or worst > PIXEL_TOL:
            raise SystemExit(f"mixup case {case}: labels differ or pixel diff {worst}")
    print(f"mixup: {cases} pairs, labels equal, max |pixel diff| {worst} "
          f"(on at most {differing:.3%} of the pixels: float32 vs their float64 before truncation)")


# ------------------------------------------------------------------------------------------------ YOLOX
def import_yolox(src: Path):
    """(data_augment, mosaicdetection) modules of their package, ``__init__`` files bypassed."""
    if not (src / "yolox" / "data" / "data_augment.py").is_file():
        sys.exit(f"--yolox-src {src}: no yolox/data/data_augment.py there")
    missing = {r for r in ("torchvision", "psutil", "loguru") if importlib.util.find_spec(r) is None}
    sys.meta_path.insert(0, _StubFinder(missing))
    for name, sub in (("yolox", ""), ("yolox.data", "data"), ("yolox.data.datasets", "data/datasets"),
                      ("yolox.utils", "utils")):
        package = types.ModuleType(name)
        package.__path__ = [str(src / "yolox" / sub)]
        sys.modules[name] = package
    boxes = importlib.import_module("yolox.utils.boxes")
    utils = sys.modules["yolox.utils"]  # what their two modules import from it
    utils.xyxy2cxcywh, utils.adjust_box_anns, utils.get_local_rank = boxes.xyxy2cxcywh, boxes.adjust_box_anns, int
    return importlib.import_module("yolox.data.data_augment"), importlib.import_module(
        "yolox.data.datasets.mosaicdetection")


def yolox_draw(uniforms: list[float]) -> AffineDraw:
    """YOLOX's 6 draws (angle, scale, shear x, shear y, translate x, y) as ours: their first shear draw
    multiplies R's first row into M's second, i.e. our ``shear_y``; translation t is our centre 0.5 + t."""
    angle, scale, shear_first, shear_second, tx, ty = uniforms
    return AffineDraw(angle=angle, scale=scale, shear_x=shear_second, shear_y=shear_first, centre_x=0.5 + tx,
                      centre_y=0.5 + ty)


class ReplayRng:
    """Stands in for our ``numpy.random.Generator``, returning values recorded from their ``random``."""

    def __init__(self, uniforms: list[float], integers: list[int]) -> None:
        self.uniforms, self.ints = list(uniforms), list(integers)

    def uniform(self, low=0.0, high=1.0):
        return self.uniforms.pop(0)

    def integers(self, low, high=None):
        return self.ints.pop(0)


def check_yolox(data_augment, mosaicdetection, cases: int, size: int = 128) -> None:
    worst = {"pixel": 0, "box": 0.0, "boxes": 0}
    for case in range(cases):
        rng = np.random.default_rng(30_000 + case)
        canvas = rng.integers(0, 255, (2 * size, 2 * size, 3), dtype=np.uint8)
        boxes = random_boxes(rng, int(rng.integers(1, 12)), 2 * size, 2 * size)
        classes = rng.integers(0, 3, len(boxes))
        recorder = RecordingRandom(case)
        data_augment.random = recorder
        targets = np.concatenate([boxes, classes[:, None].astype(float)], 1)
        their_img, their_labels = data_augment.random_affine(canvas.copy(), targets.copy(), target_size=(size, size),
                                                             degrees=10.0, translate=0.1, scales=(0.1, 2.0), shear=2.0)
        ours = apply_affine(LabelledImage(canvas, boxes, classes), yolox_draw(recorder.uniforms), (size, size),
                            style="yolox")
        their = np.concatenate([their_labels[:, 4:5], their_labels[:, :4]], 1)  # as [cls, xyxy]
        compare(f"yolox random_affine case {case}", their_img, their, ours, worst)
    print(f"YOLOX random_affine (degrees 10, translate 0.1, scale 0.1-2, shear 2) on {cases} 2S canvases at "
          f"{size} px: {worst['boxes']} boxes; max |pixel diff| {worst['pixel']}, max |box diff| {worst['box']:.1e} px")

    worst = {"pixel": 0, "box": 0.0, "boxes": 0}

    class StandInDataset:  # what MosaicDetection.mixup reads from its wrapped dataset
        def __init__(self, image, labels):
            self.image, self.labels = image, labels

        def load_anno(self, index):
            return self.labels

        def pull_item(self, index):
            return self.image.copy(), self.labels.copy(), None, index

    class StandInMosaic:
        mixup_scale = (0.5, 1.5)

        def __init__(self, dataset):
            self._dataset = dataset

        def __len__(self):
            return 5

    for case in range(cases):
        rng = np.random.default_rng(40_000 + case)
        first = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        first_boxes = random_boxes(rng, 3, size, size)
        h, w = int(rng.integers(40, 400)), int(rng.integers(40, 400))
        other = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        other_boxes = random_boxes(rng, int(rng.integers(1, 8)), w, h)
        other_classes = rng.integers(0, 3, len(other_boxes))
        recorder = RecordingRandom(case)
        mosaicdetection.random = recorder
        other_labels = np.concatenate([other_boxes, other_classes[:, None].astype(float)], 1)
        first_labels = np.concatenate([first_boxes, np.zeros((3, 1))], 1)
        their_img, their_labels = mosaicdetection.MosaicDetection.mixup(
            StandInMosaic(StandInDataset(other, other_labels)), first.copy(), first_labels.copy(), (size, size))
        replay = ReplayRng(recorder.uniforms, recorder.randints[1:])  # randints[0] picked the image
        ours = mixup_yolox(LabelledImage(first, first_boxes, np.zeros(3, int)),
                           LabelledImage(other, other_boxes, other_classes), replay)
        their = np.concatenate([their_labels[:, 4:5], their_labels[:, :4]], 1)
        compare(f"yolox mixup case {case}", their_img, their, ours, worst)
    print(f"YOLOX MosaicDetection.mixup on {cases} pairs at {size} px: {worst['boxes']} boxes; "
          f"max |pixel diff| {worst['pixel']}, max |box diff| {worst['box']:.1e} px")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", type=Path, required=True)
    parser.add_argument("--yolox-src", type=Path, help="folder holding YOLOX's yolox package")
    parser.add_argument("--cases", type=int, default=200)
    args = parser.parse_args()
    augmentations, dataloaders = import_theirs(args.site)
    check_perspective(augmentations, args.cases)
    check_mosaic(dataloaders, augmentations, args.cases)
    check_mixup(augmentations, args.cases)
    if args.yolox_src is not None:
        check_yolox(*import_yolox(args.yolox_src), args.cases)
    print("parity: OK")


if __name__ == "__main__":
    main()
