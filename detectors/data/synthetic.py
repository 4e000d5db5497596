"""A KITTI-like synthetic road-scene set, generated fast and deterministically from a seed.

Why it looks the way it does:

- **Perspective.** A pinhole camera 1.65 m above a flat road (KITTI's rig): an object standing on the
  ground with its foot at image row ``y`` is ``h_world / 1.65 * (y - horizon)`` pixels tall. Depth is
  sampled so that the foot row is log-uniform between just below the horizon and past the image
  bottom, which fills COCO's small (< 32^2), medium and large (> 96^2) buckets for every class at
  KITTI's 1242x375.
- **Classes that differ in shape and colour**, still visible after a 4-8x downscale to a 160-320 px
  network input: *Car* is wide, a saturated body with a dark window band and black wheels; *Pedestrian*
  is tall and thin, skin-coloured head, shirt, dark legs; *Cyclist* is a side view with two big wheel
  rings and a rider in a bright jersey.
- **Clutter**: textured sky, buildings, trees, poles and signs that are never labelled, so the
  detector must learn the classes, not "anything that is not road".
- **KITTI conventions**: boxes are clipped to the image with the ``truncated`` fraction recorded,
  ``occluded`` levels 0-2 from the area hidden by nearer objects (objects mostly hidden are not
  placed), and objects too small to label (under ~10 px tall at 375 px) become ``DontCare`` regions.

Every image has its own RNG seeded by ``(seed, image index)``, so a set is identical whatever the
number of worker processes. The renderer uses OpenCV primitives on uint8 arrays; PNGs are written at
compression level 1 (a 3-4x faster encode for ~25% bigger files).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

from detectors.data.kitti import DONT_CARE, format_label_line, image_dir, label_dir, split_file

CLASSES = ("Car", "Pedestrian", "Cyclist")
MANIFEST = "synthetic.json"
GENERATOR_VERSION = 1
CAMERA_HEIGHT = 1.65  # metres, KITTI
KITTI_FOCAL = 721.5  # pixels at 1242 px width
PNG_COMPRESSION = 1
# A fixed SUB filter skips libpng's per-row filter search: ~20% faster and smaller files here.
_PNG_PARAMS = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    _PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]

# (height, width, length) in metres, KITTI-typical means
_DIMS = {"Car": (1.52, 1.65, 4.0), "Pedestrian": (1.75, 0.6, 0.8), "Cyclist": (1.72, 0.6, 1.75)}
_CLASS_PROBS = (0.45, 0.3, 0.25)

# BGR palettes
_CAR_COLOURS = np.array([[40, 40, 200], [200, 60, 30], [230, 230, 230], [170, 170, 170], [30, 30, 30],
                         [40, 140, 230], [120, 40, 40], [60, 160, 60], [30, 200, 230]], np.int32)
_SHIRT_COLOURS = np.array([[200, 90, 40], [40, 40, 160], [220, 220, 220], [90, 90, 90], [160, 60, 160],
                           [60, 120, 60], [30, 90, 200]], np.int32)
_JERSEY_COLOURS = np.array([[0, 230, 255], [0, 140, 255], [60, 255, 150], [255, 0, 255], [0, 255, 255]],
                           np.int32)
_SKIN = np.array([[140, 170, 220], [100, 130, 190], [60, 90, 140], [170, 200, 240]], np.int32)


@dataclass(frozen=True)
class SceneObject:
    kind: str
    box: tuple[float, float, float, float]  # clipped xyxy in pixels
    truncated: float
    occluded: int
    alpha: float
    dims: tuple[float, float, float]
    location: tuple[float, float, float]
    rotation_y: float


def _colour(c) -> tuple[int, int, int]:
    return (int(c[0]), int(c[1]), int(c[2]))


def _jitter(rng: np.random.Generator, colour: np.ndarray, amount: int = 20) -> tuple[int, int, int]:
    return _colour(np.clip(colour + rng.integers(-amount, amount + 1, 3), 0, 255))


# ---------------------------------------------------------------------------------------------
# background


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """(H, W) int16 noise: smooth blotches plus fine grain, shared by all channels (cheap, looks natural)."""
    coarse = rng.normal(0.0, 10.0, (height // 24 + 2, width // 24 + 2)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    grain = rng.integers(-7, 8, (height, width), dtype=np.int16)
    return cv2.add(smooth.astype(np.int16), grain)


def _background(rng: np.random.Generator, width: int, height: int, horizon: int, cx: float,
                scale: float) -> tuple[np.ndarray, float, float]:
    """Sky, far buildings, ground, road with lane markings. Returns (image, road left X, road right X)."""
    img = np.empty((height, width, 3), np.uint8)
    top = np.array([rng.integers(170, 240), rng.integers(130, 200), rng.integers(90, 150)], np.float32)
    bottom = np.array([rng.integers(200, 250)] * 3, np.float32)
    t = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None]
    img[:horizon] = (top * (1 - t) + bottom * t)[:, None, :].astype(np.uint8)
    ground = np.array([rng.integers(40, 90), rng.integers(90, 150), rng.integers(60, 110)])  # grass
    img[horizon:] = ground.astype(np.uint8)

    # Far buildings and tree lines along the horizon (unlabelled clutter).
    x = -rng.integers(0, 40)
    while x < width:
        w = int(rng.integers(30, 160) * scale) + 4
        h = int(rng.integers(10, 70) * scale * (height / 375)) + 2
        if rng.random() < 0.35:
            cv2.ellipse(img, (int(x + w / 2), horizon), (w // 2, h), 0, 180, 360,
                        _jitter(rng, np.array([50, 110, 60]), 25), -1)
        else:
            grey = int(rng.integers(80, 200))
            colour = _jitter(rng, np.array([grey, grey, grey + 10]), 20)
            cv2.rectangle(img, (int(x), horizon - h), (int(x + w), horizon), colour, -1)
        x += w + int(rng.integers(0, 30))

    depth_span = height - horizon
    left_x = -float(rng.uniform(5.0, 9.0))
    right_x = float(rng.uniform(5.0, 9.0))

    def ground_x(xw: float, y: float) -> float:
        return cx + xw * (y - horizon) / CAMERA_HEIGHT

    # Sidewalks then road, as triangles from the vanishing point.
    sidewalk = _jitter(rng, np.array([150, 160, 170]), 20)
    for a, b in ((left_x - 3.0, left_x), (right_x, right_x + 3.0)):
        pts = np.array([[cx, horizon], [ground_x(a, height), height], [ground_x(b, height), height]], np.int32)
        cv2.fillPoly(img, [pts], sidewalk)
    asphalt = int(rng.integers(70, 120))
    road = np.array([[cx, horizon], [ground_x(left_x, height), height], [ground_x(right_x, height), height]],
                    np.int32)
    cv2.fillPoly(img, [road], (asphalt, asphalt, asphalt + 5))

    # Dashed lane lines: dashes equally spaced in depth, so they shrink towards the horizon.
    lanes = [xw for xw in np.arange(left_x + 3.5, right_x - 1.0, 3.5)]
    z_near = KITTI_FOCAL * scale * CAMERA_HEIGHT / max(depth_span, 1)
    phase = rng.uniform(0, 6.0)
    for xw in lanes:
        z = z_near + phase
        while z < 80:
            y0 = horizon + KITTI_FOCAL * scale * CAMERA_HEIGHT / (z + 3.0)
            y1 = horizon + KITTI_FOCAL * scale * CAMERA_HEIGHT / z
            half = 0.08
            pts = np.array([[ground_x(xw - half, y1), y1], [ground_x(xw + half, y1), y1],
                            [ground_x(xw + half, y0), y0], [ground_x(xw - half, y0), y0]], np.int32)
            cv2.fillPoly(img, [pts], (230, 230, 230))
            z += 9.0

    # Roadside poles, trees and signs: upright clutter with the same perspective as the objects.
    for _ in range(int(rng.integers(3, 9))):
        d = float(np.exp(rng.uniform(np.log(4), np.log(depth_span * 1.3))))
        yb = horizon + d
        side = left_x - rng.uniform(1.0, 8.0) if rng.random() < 0.5 else right_x + rng.uniform(1.0, 8.0)
        xb = ground_x(side, yb)
        kind = rng.random()
        if kind < 0.4:  # tree
            h = 6.0 * d / CAMERA_HEIGHT
            trunk = max(1, int(0.04 * h))
            cv2.rectangle(img, (int(xb - trunk), int(yb - 0.45 * h)), (int(xb + trunk), int(yb)),
                          (30, 60, 90), -1)
            cv2.ellipse(img, (int(xb), int(yb - 0.65 * h)), (max(1, int(0.22 * h)), max(1, int(0.3 * h))),
                        0, 0, 360, _jitter(rng, np.array([40, 120, 50]), 30), -1)
        elif kind < 0.75:  # pole
            h = 5.0 * d / CAMERA_HEIGHT
            w = max(1, int(0.015 * h))
            cv2.rectangle(img, (int(xb - w), int(yb - h)), (int(xb + w), int(yb)), (120, 120, 125), -1)
        else:  # sign on a post
            h = 2.6 * d / CAMERA_HEIGHT
            w = max(1, int(0.012 * h))
            cv2.rectangle(img, (int(xb - w), int(yb - h)), (int(xb + w), int(yb)), (110, 110, 110), -1)
            r = max(1, int(0.14 * h))
            colour = (200, 80, 20) if rng.random() < 0.5 else (30, 30, 220)
            cv2.circle(img, (int(xb), int(yb - h)), r, colour, -1, cv2.LINE_AA)
            cv2.circle(img, (int(xb), int(yb - h)), max(1, r * 2 // 3), (240, 240, 240), -1, cv2.LINE_AA)
    return img, left_x, right_x


# ---------------------------------------------------------------------------------------------
# the three classes


def _draw_car(img, rng, x1, y1, x2, y2, side_view: bool) -> None:
    w, h = x2 - x1, y2 - y1
    body = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))]
    body_c = _jitter(rng, body, 15)
    dark = _colour(np.clip(body * 0.55, 0, 255))
    # shadow under the car
    cv2.ellipse(img, (int((x1 + x2) / 2), int(y2)), (max(1, int(w * 0.55)), max(1, int(h * 0.08))), 0, 0, 360,
                (25, 25, 25), -1)
    cabin_inset = 0.22 if side_view else 0.12
    cabin = np.array([[x1 + w * cabin_inset, y1], [x2 - w * cabin_inset * (0.6 if side_view else 1), y1],
                      [x2 - w * 0.04, y1 + h * 0.45], [x1 + w * 0.04, y1 + h * 0.45]], np.int32)
    cv2.fillPoly(img, [cabin], body_c, cv2.LINE_AA)
    window = np.array([[x1 + w * (cabin_inset + 0.04), y1 + h * 0.07],
                       [x2 - w * (cabin_inset * (0.6 if side_view else 1) + 0.04), y1 + h * 0.07],
                       [x2 - w * 0.1, y1 + h * 0.42], [x1 + w * 0.1, y1 + h * 0.42]], np.int32)
    cv2.fillPoly(img, [window], (70, 50, 40), cv2.LINE_AA)
    cv2.rectangle(img, (int(x1), int(y1 + h * 0.42)), (int(x2), int(y1 + h * 0.85)), body_c, -1)
    cv2.rectangle(img, (int(x1), int(y1 + h * 0.62)), (int(x2), int(y1 + h * 0.66)), dark, -1)
    wheel_r = max(1, int(h * 0.17))
    wheel_y = int(y2 - wheel_r)
    if side_view:
        for cxw in (x1 + w * 0.2, x2 - w * 0.2):
            cv2.circle(img, (int(cxw), wheel_y), wheel_r, (20, 20, 20), -1, cv2.LINE_AA)
            cv2.circle(img, (int(cxw), wheel_y), max(1, wheel_r // 2), (150, 150, 150), -1, cv2.LINE_AA)
    else:
        ww = max(1, int(w * 0.14))
        for xa in (x1 + w * 0.03, x2 - w * 0.03 - ww):
            cv2.rectangle(img, (int(xa), int(y1 + h * 0.8)), (int(xa + ww), int(y2)), (20, 20, 20), -1)
        lh = max(1, int(h * 0.07))
        for xa in (x1 + w * 0.04, x2 - w * 0.16):
            cv2.rectangle(img, (int(xa), int(y1 + h * 0.5)), (int(xa + w * 0.12), int(y1 + h * 0.5) + lh),
                          (30, 30, 230), -1)


def _draw_pedestrian(img, rng, x1, y1, x2, y2) -> None:
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    shirt = _jitter(rng, _SHIRT_COLOURS[rng.integers(len(_SHIRT_COLOURS))], 20)
    legs = _jitter(rng, np.array([60, 40, 30]), 20)
    skin = _jitter(rng, _SKIN[rng.integers(len(_SKIN))], 10)
    head_r = max(1, int(h * 0.075))
    stride = rng.uniform(0.15, 0.5)  # walking phase: how far the feet are apart (fraction of width)
    leg_w = max(1, int(w * 0.2))
    for sign in (-1, 1):
        foot = cx + sign * stride * w
        pts = np.array([[cx + sign * w * 0.04 - leg_w / 2, y1 + h * 0.5], [cx + sign * w * 0.04 + leg_w / 2,
                        y1 + h * 0.5], [foot + leg_w / 2, y2], [foot - leg_w / 2, y2]], np.int32)
        cv2.fillPoly(img, [pts], legs, cv2.LINE_AA)
    torso = np.array([[cx - w * 0.3, y1 + h * 0.17], [cx + w * 0.3, y1 + h * 0.17],
                      [cx + w * 0.25, y1 + h * 0.55], [cx - w * 0.25, y1 + h * 0.55]], np.int32)
    cv2.fillPoly(img, [torso], shirt, cv2.LINE_AA)
    arm = max(1, int(w * 0.12))
    for sign in (-1, 1):
        cv2.line(img, (int(cx + sign * w * 0.3), int(y1 + h * 0.2)), (int(cx + sign * w * 0.45), int(y1 + h * 0.5)),
                 shirt, arm, cv2.LINE_AA)
    cv2.circle(img, (int(cx), int(y1 + head_r)), head_r, skin, -1, cv2.LINE_AA)
    cv2.ellipse(img, (int(cx), int(y1 + head_r)), (head_r, max(1, head_r // 2)), 0, 180, 360,
                (30, 30, 40), -1)  # hair


def _draw_cyclist(img, rng, x1, y1, x2, y2, facing_right: bool) -> None:
    w, h = x2 - x1, y2 - y1
    jersey = _jitter(rng, _JERSEY_COLOURS[rng.integers(len(_JERSEY_COLOURS))], 15)
    r = max(1, int(min(h * 0.22, w * 0.24)))
    thick = max(1, r // 4)
    wy = int(y2 - r)
    back, front = (x1 + r, x2 - r) if facing_right else (x2 - r, x1 + r)
    for xw in (back, front):
        cv2.circle(img, (int(xw), wy), r, (20, 20, 20), thick, cv2.LINE_AA)
    frame = (40, 40, 200) if rng.random() < 0.5 else (180, 180, 180)
    seat = (back + (front - back) * 0.35, y1 + h * 0.5)
    bar = (back + (front - back) * 0.8, y1 + h * 0.45)
    crank = (back + (front - back) * 0.45, wy)
    for a, b in ((back, wy), (front, wy)), (seat, crank), (bar, (front, wy)), (seat, bar), (crank, (back, wy)):
        cv2.line(img, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), frame, thick, cv2.LINE_AA)
    # rider: leaning torso from the seat to the shoulders above the bar, bright jersey
    shoulder = (back + (front - back) * 0.68, y1 + h * 0.17)
    cv2.line(img, (int(seat[0]), int(seat[1])), (int(shoulder[0]), int(shoulder[1])), jersey,
             max(1, int(w * 0.16)), cv2.LINE_AA)
    cv2.line(img, (int(shoulder[0]), int(shoulder[1])), (int(bar[0]), int(bar[1])), jersey,
             max(1, int(w * 0.05)), cv2.LINE_AA)
    cv2.line(img, (int(seat[0]), int(seat[1])), (int(crank[0]), int(crank[1])), (40, 30, 30),
             max(1, int(w * 0.07)), cv2.LINE_AA)
    head_r = max(1, int(h * 0.08))
    cv2.circle(img, (int(shoulder[0] + (front - back) * 0.06), int(y1 + head_r)), head_r, jersey, -1, cv2.LINE_AA)


# ---------------------------------------------------------------------------------------------
# one scene


def render_scene(seed: int, index: int, width: int, height: int) -> tuple[np.ndarray, list[SceneObject],
                                                                          list[tuple[float, ...]]]:
    """``(BGR image, labelled objects, DontCare boxes)`` of image ``index`` of the set ``seed``."""
    rng = np.random.default_rng([seed, index])
    scale = width / 1242.0
    focal = KITTI_FOCAL * scale
    horizon = int(height * rng.uniform(0.4, 0.5))
    cx = width / 2 + rng.uniform(-0.05, 0.05) * width
    img, road_left, road_right = _background(rng, width, height, horizon, cx, scale)
    depth_span = height - horizon
    min_px = 10.0 * height / 375.0  # smaller objects become DontCare, as in KITTI

    candidates = []
    for _ in range(int(rng.integers(5, 18))):
        kind = CLASSES[rng.choice(3, p=_CLASS_PROBS)]
        # Foot row offset below the horizon, log-uniform: equal shares of near and far objects. Feet
        # may fall below the image (truncated objects); slender pedestrians need it to be large (> 96^2).
        reach = 1.15 if kind == "Car" else 1.6
        d = float(np.exp(rng.uniform(np.log(3.5), np.log(depth_span * reach))))
        z = focal * CAMERA_HEIGHT / d
        dims = tuple(v * rng.uniform(0.9, 1.1) for v in _DIMS[kind])
        if kind == "Car":
            xw = rng.uniform(road_left + 1.0, road_right - 1.0)
            side_view = rng.random() < 0.4
            aspect = (dims[2] if side_view else dims[1] * 1.05) / dims[0] * rng.uniform(0.9, 1.1)
        elif kind == "Pedestrian":
            if rng.random() < 0.35:  # crossing the road: the only place a near pedestrian is in view
                xw = rng.uniform(road_left, road_right)
            elif rng.random() < 0.5:
                xw = rng.uniform(road_left - 3.0, road_left)
            else:
                xw = rng.uniform(road_right, road_right + 3.0)
            side_view = False
            aspect = rng.uniform(0.33, 0.45)
        else:
            xw = rng.uniform(road_left, road_left + 1.5) if rng.random() < 0.5 else rng.uniform(road_right - 1.5,
                                                                                                road_right)
            side_view = rng.random() < 0.5  # facing right
            aspect = rng.uniform(0.85, 1.05)
        h_px = dims[0] / CAMERA_HEIGHT * d
        w_px = h_px * aspect
        xc = cx + focal * xw / z
        yb = horizon + d
        box = (xc - w_px / 2, yb - h_px, xc + w_px / 2, yb)
        if box[2] < 2 or box[0] > width - 3 or box[1] > height - 3:
            continue  # (almost) wholly outside the image
        ry = float(rng.uniform(-np.pi, np.pi))
        candidates.append((d, kind, box, side_view, dims, (xw, CAMERA_HEIGHT, z), ry))

    # Accept nearest first; reject objects mostly hidden by nearer ones. Occupancy on a 1/4 grid.
    candidates.sort(key=lambda c: -c[0])
    grid = np.zeros((height // 4 + 1, width // 4 + 1), np.uint8)
    accepted = []
    for cand in candidates:
        x1, y1, x2, y2 = cand[2]
        gx1, gy1 = max(int(x1 // 4), 0), max(int(y1 // 4), 0)
        gx2, gy2 = min(int(np.ceil(x2 / 4)), grid.shape[1]), min(int(np.ceil(y2 / 4)), grid.shape[0])
        if gx2 <= gx1 or gy2 <= gy1:
            continue
        cover = float(grid[gy1:gy2, gx1:gx2].mean())
        if cover > 0.5:
            continue
        grid[gy1:gy2, gx1:gx2] = 1
        accepted.append((cover, cand))

    objects, dont_care = [], []
    for cover, (_d, kind, box, side_view, dims, loc, ry) in reversed(accepted):  # far to near: painter
        x1, y1, x2, y2 = box
        if kind == "Car":
            _draw_car(img, rng, x1, y1, x2, y2, side_view)
        elif kind == "Pedestrian":
            _draw_pedestrian(img, rng, x1, y1, x2, y2)
        else:
            _draw_cyclist(img, rng, x1, y1, x2, y2, side_view)
        clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, width - 1.0), min(y2, height - 1.0))
        full = (x2 - x1) * (y2 - y1)
        visible = max(clipped[2] - clipped[0], 0) * max(clipped[3] - clipped[1], 0)
        if y2 - y1 < min_px:
            dont_care.append(clipped)
            continue
        occluded = 0 if cover < 0.1 else (1 if cover < 0.35 else 2)
        alpha = float((ry - np.arctan2(loc[0], loc[2]) + np.pi) % (2 * np.pi) - np.pi)
        objects.append(SceneObject(kind, clipped, 1.0 - visible / full, occluded, alpha, dims, loc, ry))

    noise = _texture(rng, width, height)
    exposed = cv2.convertScaleAbs(img, alpha=float(rng.uniform(0.8, 1.15)))  # global exposure, saturating
    # uint8 + int16 -> saturated uint8 in one OpenCV call (3x faster than float numpy)
    return cv2.add(exposed, cv2.merge([noise, noise, noise]), dtype=cv2.CV_8U), objects, dont_care


def _write_one(out: Path, seed: int, index: int, width: int, height: int) -> None:
    image, objects, dont_care = render_scene(seed, index, width, height)
    name = f"{index:06d}"
    if not cv2.imwrite(str(image_dir(out) / f"{name}.png"), image, _PNG_PARAMS):
        raise OSError(f"cannot write {image_dir(out) / (name + '.png')}")
    lines = [format_label_line(o.kind, o.box, truncated=o.truncated, occluded=o.occluded, alpha=o.alpha,
                               dims=o.dims, location=o.location, rotation_y=o.rotation_y) for o in objects]
    lines += [format_label_line(DONT_CARE, box) for box in dont_care]
    (label_dir(out) / f"{name}.txt").write_text("".join(line + "\n" for line in lines))


def _write_chunk(args: tuple[str, int, list[int], int, int]) -> int:
    out, seed, indices, width, height = args
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe
    for index in indices:
        _write_one(Path(out), seed, index, width, height)
    return len(indices)


def split_indices(images: int, seed: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Deterministic ``(train, val)`` image indices; both non-empty."""
    n_val = min(max(1, round(images * val_fraction)), images - 1)
    perm = np.random.default_rng([seed, 2**31 - 1]).permutation(images)
    return sorted(perm[n_val:].tolist()), sorted(perm[:n_val].tolist())


def generate_synthetic_kitti(out: str | Path, *, images: int, seed: int = 0, width: int = 1242, height: int = 375,
                             val_fraction: float = 0.2, workers: int | None = None) -> Path:
    """Write a KITTI-layout synthetic set into ``out`` (created; existing files are overwritten)."""
    if images < 2:
        raise ValueError(f"images: expected at least 2 (a train and a val image), got {images}")
    out = Path(out)
    image_dir(out).mkdir(parents=True, exist_ok=True)
    label_dir(out).mkdir(parents=True, exist_ok=True)
    split_file(out, "train").parent.mkdir(parents=True, exist_ok=True)
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if images >= 64 else 1
    workers = max(1, min(workers, images))
    if workers == 1:
        _write_chunk((str(out), seed, list(range(images)), width, height))
    else:
        # Interleaved chunks of ~16 images: balanced load, little per-task overhead.
        chunks = [list(range(i, min(i + 16, images))) for i in range(0, images, 16)]
        # spawn, not fork: the caller may hold torch/OpenMP threads, which fork does not copy safely.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            list(pool.map(_write_chunk, [(str(out), seed, c, width, height) for c in chunks]))
    train, val = split_indices(images, seed, val_fraction)
    for split, ids in (("train", train), ("val", val)):
        split_file(out, split).write_text("".join(f"{i:06d}\n" for i in ids))
    manifest = {"generator": "mssd synthetic KITTI-like", "version": GENERATOR_VERSION, "images": images,
                "seed": seed, "width": width, "height": height, "val_fraction": val_fraction}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out
