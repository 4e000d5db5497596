"""``losses.gt``: each detector family's own L_gt settings block, parsed against the running detector.

A family declares its block as a dataclass (``Family.gt_config``, fields built with
``detectors.config_fields.rule``): YOLOv5 its gains, YOLOX its SimOTA prior, FCOS / RetinaNet / the R-CNNs
an empty block (their losses read no setting). ``parse_config`` builds the block of ``detector.name``'s
family here, so a key another family's loss reads (``losses.gt.box`` on FCOS) is one ``ConfigError`` naming
the key, the detector, the family's keys and, where it helps, the family the key belongs to.

Configs saved by an older release (checkpoints, a study's ``base-config.yaml``) carried one block for every
family (YOLOv5's gains and YOLOX's prior together): ``drop_foreign_gt_keys`` removes the keys that belong
to other families' blocks, so those files still load and resume; a user's YAML gets the error instead.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from detectors.config_fields import build
from detectors.errors import ConfigError
from detectors.zoo import DETECTORS, FAMILIES, family_of

GT_PATH = "losses.gt"


def gt_keys(gt_config: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(gt_config))


def split_gt(data: dict) -> tuple[dict, Any]:
    """``(data without losses.gt, the losses.gt value or None)``; ``data`` itself is not modified."""
    losses = data.get("losses")
    if not isinstance(losses, dict) or "gt" not in losses:
        return data, None
    rest = {key: value for key, value in losses.items() if key != "gt"}
    return {**data, "losses": rest}, losses["gt"]


def build_gt_config(detector: str, data: Any) -> Any:
    """The ``losses.gt`` block of ``detector``'s family from a plain mapping (None: every default)."""
    family = family_of(detector)
    gt_config = family.gt_config
    if data is None:
        return gt_config()
    if not isinstance(data, dict):
        raise ConfigError(f"{GT_PATH}: expected a mapping (the {family.name} family's L_gt settings), got {data!r}")
    known = gt_keys(gt_config)
    for key in data:
        if key not in known:
            raise ConfigError(_unknown_key_message(str(key), detector, family.name, known))
    return build(gt_config, data, GT_PATH)


def _unknown_key_message(key: str, detector: str, family: str, known: tuple[str, ...]) -> str:
    owners = [name for name, other in FAMILIES.items() if name != family and key in gt_keys(other.gt_config)]
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {GT_PATH}.{close[0]}?" if close else ""
    has = f"expected one of: {', '.join(known)}" if known else "its loss reads no losses.gt setting: expected none"
    belongs = f"; {key} is a setting of {', '.join(owners)}" if owners else ""
    return f"{GT_PATH}.{key}: unknown key for detector {detector}{hint} (family {family}: {has}{belongs})"


def drop_foreign_gt_keys(data: dict, detector: str) -> dict:
    """``data`` (a saved config mapping of ``detector``) without the ``losses.gt`` keys that only other
    families' blocks have: how a config written when ``losses.gt`` held every family's settings is read."""
    losses = data.get("losses")
    if detector not in DETECTORS or not isinstance(losses, dict) or not isinstance(losses.get("gt"), dict):
        return data
    own = set(gt_keys(DETECTORS[detector].gt_config))
    foreign = {key for other in FAMILIES.values() for key in gt_keys(other.gt_config)} - own
    gt = {key: value for key, value in losses["gt"].items() if key not in foreign}
    return {**data, "losses": {**losses, "gt": gt}}
