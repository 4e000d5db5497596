"""COCO JSON (``images``, ``annotations``, ``categories``) into ``Sample``s.

Categories are matched to ``data.classes`` by name; annotations of other categories are dropped and
``iscrowd=1`` annotations become ignore regions, as COCO's own evaluation treats them. Nothing is dropped
silently: a file none of whose categories is in ``data.classes``, an annotation whose ``category_id`` is
not in ``categories`` or whose ``image_id`` names no image is refused, naming the first offender. Sample ids
follow the order of the JSON's ``images`` list. JSON offers no line numbers below the syntax level, so
content errors name the file and the key path (``annotations[12].bbox``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detectors.data.sample import BoxSanitizer, Sample, class_index, image_size
from detectors.errors import DataFormatError


def _load_json(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataFormatError(f"{path}: annotation file not found") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DataFormatError(f"{path}: expected a JSON object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataFormatError(f"{path}: {key}: expected a list")
    return data


def _field(item, key: str, kind, where: str):
    if not isinstance(item, dict) or key not in item:
        raise DataFormatError(f"{where}: missing key {key!r}")
    value = item[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise DataFormatError(f"{where}.{key}: expected {getattr(kind, '__name__', 'a number')}, got {value!r}")
    return value


def _category_table(data: dict, path: Path, class_names: list[str]) -> tuple[set[int], dict[int, int]]:
    """(every category id, category id -> class id for the categories named in ``class_names``).

    A file none of whose categories is in ``data.classes`` is refused: every object would be dropped and
    the run would train on background (the usual cause: a case difference, ``car`` for ``Car``).
    """
    index = class_index(class_names)
    ids, category_to_class, names = set(), {}, []
    for i, cat in enumerate(data["categories"]):
        cat_id = _field(cat, "id", int, f"{path}: categories[{i}]")
        name = _field(cat, "name", str, f"{path}: categories[{i}]")
        ids.add(cat_id)
        names.append(name)
        if name in index:
            category_to_class[cat_id] = index[name]
    if names and not category_to_class:
        by_case = {n.lower(): n for n in names}
        hints = [f"{by_case[c.lower()]!r} for {c!r}" for c in class_names if c.lower() in by_case]
        hint = f" (names are case-sensitive: the file has {', '.join(hints)})" if hints else ""
        raise DataFormatError(f"{path}: no category matches data.classes {list(class_names)}; the file's categories "
                              f"are {names[:10]}{' ...' if len(names) > 10 else ''}{hint}")
    return ids, category_to_class


def _annotation_label(ann: dict, i: int) -> str:
    return f"annotations[{i}]" + (f" (id {ann['id']})" if "id" in ann else "")


def read_coco(annotation_path: str | Path, image_root: str | Path, class_names: list[str]) -> list[Sample]:
    path = Path(annotation_path)
    image_root = Path(image_root)
    data = _load_json(path)
    category_ids, category_to_class = _category_table(data, path, class_names)
    image_ids = {_field(img, "id", int, f"{path}: images[{i}]") for i, img in enumerate(data["images"])}

    per_image: dict[int, list[tuple[int, list, bool]]] = {}
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]"
        image_id = _field(ann, "image_id", int, where)
        cat_id = _field(ann, "category_id", int, where)
        bbox = _field(ann, "bbox", list, where)
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise DataFormatError(f"{where}.bbox: expected 4 numbers [x, y, width, height], got {bbox!r}")
        # A dangling reference means a broken or mismatched file: dropping the object would train on less
        # than the user labelled, silently.
        if cat_id not in category_ids:
            raise DataFormatError(f"{path}: {_annotation_label(ann, i)}: category_id {cat_id} is not in "
                                  f"categories (ids {sorted(category_ids)[:10]})")
        if image_id not in image_ids:
            raise DataFormatError(f"{path}: {_annotation_label(ann, i)}: image_id {image_id} names no entry of "
                                  "images")
        crowd = bool(ann.get("iscrowd", 0))
        if crowd or cat_id in category_to_class:
            per_image.setdefault(image_id, []).append((category_to_class.get(cat_id, -1), bbox, crowd))

    sanitizer = BoxSanitizer(str(path))
    samples = []
    for i, img in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        image_id = _field(img, "id", int, where)
        file_name = _field(img, "file_name", str, where)
        image_path = image_root / file_name
        if not image_path.is_file():
            raise DataFormatError(f"{image_path}: image not found ({where})")
        width, height = (img["width"], img["height"]) if {"width", "height"} <= img.keys() \
            else image_size(image_path)
        boxes, classes, ignore = [], [], []
        for cls, (x, y, w, h), crowd in per_image.get(image_id, []):
            if crowd:
                ignore.append([x, y, x + w, y + h])
            else:
                boxes.append([x, y, x + w, y + h])
                classes.append(cls)
        boxes_arr, keep = sanitizer.clean(np.array(boxes, np.float32), width, height)
        ignore_arr, _ = sanitizer.clean(np.array(ignore, np.float32), width, height)
        samples.append(Sample(image_id=i, name=Path(file_name).stem, image_path=image_path, width=int(width),
                              height=int(height), boxes=boxes_arr,
                              classes=np.asarray(classes, np.int64)[keep], ignore=ignore_arr))
    sanitizer.warn()
    return samples
