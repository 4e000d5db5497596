"""Part d: evaluation of the validation images (400 in the full run) on part c's briefly trained model.

With ``eval.rect`` on and off: the trainer's whole evaluation (``detectors.engine.validate.validate`` on the
EMA weights, after one untimed warm-up pass), and its parts on the same loader: the model's forward alone,
``predict`` (forward + decoding + NMS + boxes to the host; NMS is the difference), and COCOeval on the
collected detections; mAP of each. Without a COCOeval implementation (``faster-coco-eval`` not carried)
the model and NMS figures still come, and the report says what is missing.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from gpu_check_parts.common import coco_backend, sync

EVAL_GOAL_S = 1.5


def timed_eval(trainer, rect: bool, backend: str | None) -> dict[str, Any]:
    from detectors.engine.evaluation import evaluate
    from detectors.engine.validate import eval_loader, predict_batches, validate

    cfg = trainer.cfg
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, rect=rect, backend=backend or cfg.eval.backend))
    loader = eval_loader(cfg, trainer.val_samples, pin_memory=trainer.use_cuda)
    model, device = trainer.eval_model, trainer.device
    options = {"device": device, "amp": trainer.amp, "channels_last": trainer.channels_last}
    predict = {"conf": cfg.eval.conf, "iou": cfg.eval.iou, "max_det": cfg.eval.max_det}
    row: dict[str, Any] = {"rect": rect, "images": len(trainer.val_samples)}
    predict_batches(model, loader, **predict, **options)  # warm-up: workers, cuDNN autotuning for these shapes

    if backend is not None:
        sync(device)
        started = time.perf_counter()
        metrics = validate(model, trainer.val_samples, loader, cfg, **options)
        row.update(total_s=time.perf_counter() - started, map=metrics["map"], ap50=metrics["ap50"])

    row["model_s"] = _forward_only(model, loader, trainer)
    sync(device)
    started = time.perf_counter()
    predictions = predict_batches(model, loader, **predict, **options)
    row["predict_s"] = time.perf_counter() - started
    row["nms_s"] = max(row["predict_s"] - row["model_s"], 0.0)
    row["detections"] = sum(len(d.scores) for d in predictions.values())
    if backend is not None:
        started = time.perf_counter()
        evaluate(trainer.val_samples, predictions, list(cfg.data.classes), backend=backend)
        row["coco_s"] = time.perf_counter() - started
    return row


@torch.no_grad()
def _forward_only(model, loader, trainer) -> float:
    was_training = model.training
    model.eval()
    device = trainer.device
    autocast = torch.autocast(device.type, enabled=trainer.amp)
    seconds = 0.0
    try:
        for batch in loader:  # the loader's own time is outside the figure
            images = batch.images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            sync(device)
            started = time.perf_counter()
            with autocast:
                model(images)
            sync(device)
            seconds += time.perf_counter() - started
    finally:
        model.train(was_training)
    return seconds


def check_eval(trainer, log) -> dict[str, Any]:
    backend = coco_backend()
    rows, errors = [], []
    for rect in (True, False):
        try:
            rows.append(timed_eval(trainer, rect, backend))
            r = rows[-1]
            total = f"{r['total_s']:.2f} s (mAP {100 * r['map']:.2f})" if "total_s" in r else "not scored"
            log(f"  d eval rect={rect}, {r['images']} images: {total}; model {r['model_s']:.2f} s, "
                f"NMS {r['nms_s']:.2f} s, COCO {r.get('coco_s', float('nan')):.2f} s, {r['detections']} detections")
        except Exception as error:
            errors.append(f"rect={rect}: {type(error).__name__}: {error}")
            log("  d " + errors[-1])
    rect_on = next((r for r in rows if r["rect"]), None)
    total = rect_on.get("total_s") if rect_on else None
    note = None if backend else ("no COCOeval implementation importable: carry the faster-coco-eval wheel "
                                 "(benchmarks/README.md, GPU check); model and NMS timed without scoring")
    return {"rows": rows, "errors": errors, "backend": backend, "goal_s": EVAL_GOAL_S, "total_s": total,
            "note": note, "passed": not errors and total is not None and total <= EVAL_GOAL_S}
