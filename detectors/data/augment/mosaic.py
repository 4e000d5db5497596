"""Mosaic: four images around a random centre on a ``2S x 2S`` grey canvas (YOLOv5's ``load_mosaic``).

Each tile is first resized so that its longer side is ``S``. Tile 0 has its bottom-right corner at
the centre, tile 1 its bottom-left, tile 2 its top-right, tile 3 its top-left; the canvas border
crops whatever sticks out, and boxes and ignore regions are shifted with their tile and clipped to
the canvas. The random affine that follows (``affine.py``, output ``S x S``) brings the canvas back to
the network's size and drops the boxes that the crops left as slivers.
"""

from __future__ import annotations

import cv2
import numpy as np

from detectors.data.augment.labelled import LabelledImage, clip_boxes, concat_labels, non_empty
from detectors.data.transforms import PAD_VALUE, letterbox_meta


def fit_tile(item: LabelledImage, size: int) -> LabelledImage:
    """Resize so that the longer side is ``size``, keeping the aspect ratio (labels scaled with it).

    Same sizes and resampling as ``letterbox`` (area averaging when shrinking), so a tile's pixels
    look like the evaluation's.
    """
    meta = letterbox_meta(item.width, item.height, size)
    new_w, new_h = round(item.width * meta.scale_x), round(item.height * meta.scale_y)
    if (new_w, new_h) == (item.width, item.height):
        return item
    interp = cv2.INTER_AREA if meta.scale_x < 1 else cv2.INTER_LINEAR
    image = cv2.resize(item.image, (new_w, new_h), interpolation=interp)
    scale = np.array([meta.scale_x, meta.scale_y, meta.scale_x, meta.scale_y], np.float32)
    return LabelledImage(image, item.boxes * scale, item.classes, item.ignore * scale)


def draw_mosaic_centre(rng: np.random.Generator, size: int) -> tuple[int, int]:
    """The shared corner of the four tiles, uniform in the middle ``S x S`` of the canvas."""
    xc, yc = rng.uniform(size / 2, 1.5 * size, 2)
    return int(xc), int(yc)


def tile_origin(position: int, centre: tuple[int, int], width: int, height: int) -> tuple[int, int]:
    """Canvas coordinates of the top-left pixel of tile ``position`` (0 TL, 1 TR, 2 BL, 3 BR)."""
    xc, yc = centre
    return (xc - width if position in (0, 2) else xc), (yc - height if position in (0, 1) else yc)


def place_mosaic(tiles: list[LabelledImage], centre: tuple[int, int], size: int) -> LabelledImage:
    """Paste four (already fitted) tiles around ``centre`` on a ``2 size`` square canvas of grey."""
    if len(tiles) != 4:
        raise ValueError(f"place_mosaic: expected 4 tiles, got {len(tiles)}")
    side = 2 * size
    canvas = np.full((side, side, 3), PAD_VALUE, np.uint8)
    parts = []
    for position, tile in enumerate(tiles):
        ox, oy = tile_origin(position, centre, tile.width, tile.height)
        # The part of the tile inside the canvas, in canvas coordinates.
        x1, y1 = max(ox, 0), max(oy, 0)
        x2, y2 = min(ox + tile.width, side), min(oy + tile.height, side)
        if x2 > x1 and y2 > y1:
            canvas[y1:y2, x1:x2] = tile.image[y1 - oy:y2 - oy, x1 - ox:x2 - ox]
        shift = np.array([ox, oy, ox, oy], np.float32)
        ignore = clip_boxes(tile.ignore + shift, side, side)
        # Boxes stay even when clipped to nothing: the affine's box_candidates drops them, as YOLOv5 does.
        parts.append(LabelledImage(tile.image, clip_boxes(tile.boxes + shift, side, side), tile.classes,
                                   ignore[non_empty(ignore)]))
    return concat_labels(canvas, parts)
