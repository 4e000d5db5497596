"""Dataset statistics: images, objects per class and per COCO size bucket."""

from __future__ import annotations

import numpy as np

from detectors.data.sample import Sample, box_area

# COCO's area ranges in original-image pixels (pycocotools' areaRng).
SMALL_MAX = 32**2
MEDIUM_MAX = 96**2
BUCKETS = ("small", "medium", "large")


def size_bucket(areas: np.ndarray) -> np.ndarray:
    """0/1/2 (small/medium/large) per box area, with COCO's thresholds."""
    return np.digitize(np.asarray(areas, np.float64), [SMALL_MAX, MEDIUM_MAX])


def dataset_stats(samples: list[Sample], class_names: list[str] | tuple[str, ...]) -> dict:
    """``{"images", "background_images", "objects", "ignore_regions", "per_class": {name: {...}}}``.

    ``per_class[name]`` holds ``total`` and one count per size bucket; ``objects`` the same over all.
    """
    per_class = {name: dict.fromkeys(("total", *BUCKETS), 0) for name in class_names}
    total = dict.fromkeys(("total", *BUCKETS), 0)
    background = ignore = 0
    for s in samples:
        background += len(s.boxes) == 0
        ignore += len(s.ignore)
        buckets = size_bucket(box_area(s.boxes))
        for cls, bucket in zip(s.classes.tolist(), buckets.tolist(), strict=True):
            for counts in (per_class[class_names[cls]], total):
                counts["total"] += 1
                counts[BUCKETS[bucket]] += 1
    return {"images": len(samples), "background_images": background, "objects": total,
            "ignore_regions": ignore, "per_class": per_class}


def format_stats(stats: dict, title: str = "") -> str:
    rows = [(name, counts) for name, counts in stats["per_class"].items()] + [("all", stats["objects"])]
    width = max(8, *(len(name) for name, _ in rows))
    lines = [title] if title else []
    lines.append(f"images {stats['images']} (background {stats['background_images']}), "
                 f"ignore regions {stats['ignore_regions']}")
    lines.append(f"{'class':<{width}}  {'objects':>8}  {'small':>7}  {'medium':>7}  {'large':>7}")
    for name, c in rows:
        lines.append(f"{name:<{width}}  {c['total']:>8}  {c['small']:>7}  {c['medium']:>7}  {c['large']:>7}")
    return "\n".join(lines)
