"""YOLOv5 v6/v7.0 (n/s/m/l/x) in pure PyTorch, weight-compatible with Ultralytics.

What exists:

- ``YOLOv5`` / ``build_yolov5(size, num_classes)`` (``model.py``): the network, built layer by layer with
  Ultralytics' indices, so ``state_dict()`` keys and shapes equal those of their ``DetectionModel``.
  ``forward(images) -> DetectorOutput(head_maps, teachers, students)`` in any mode (head maps
  ``(B, 3, H, W, 5 + nc)``; neck taps keyed by stride, pairing in ``model.DEFAULT_TEACHER_LAYERS``);
  ``inference_raw(images) -> (B, N, 5 + nc)`` decoded like their eval-mode ``Detect``;
  ``predict(images, conf, iou, max_det)`` adds NMS (``detectors.ops.nms``). ``model.strides``,
  ``model.tap_channels``, ``model.detect`` (the ``Detect`` head: ``anchors`` in grid units, ``stride``,
  ``na``, ``nc``, ``nl``) are what the loss needs.
- ``blocks.py`` (Conv, Bottleneck, C3, SPPF, Concat), ``head.py`` (Detect and its decoding).
- ``weights.py``: ``load_weights(model, path)`` for a plain state dict or an official Ultralytics ``.pt``
  checkpoint, read with a restricted unpickler that never runs their code.
- ``YOLOv5Loss`` lives in ``loss.py`` (owned by the trainer); it is imported lazily from here.
"""

from detectors.yolov5.model import SIZES, DetectorOutput, YOLOv5, build_yolov5

__all__ = ["SIZES", "DetectorOutput", "YOLOv5", "YOLOv5Loss", "build_yolov5"]


def __getattr__(name: str):
    # loss.py is written by another module owner; importing it lazily keeps this package importable
    # while it is absent and avoids an import cycle if it imports from the model modules.
    if name == "YOLOv5Loss":
        from detectors.yolov5.loss import YOLOv5Loss

        return YOLOv5Loss
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
