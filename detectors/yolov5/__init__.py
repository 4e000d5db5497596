"""YOLOv5 v6/v7.0 (n/s/m/l/x) in pure PyTorch, weight-compatible with Ultralytics.

What exists:

- ``family.py``: YOLOv5 as a family of the detector contract (``detectors.api``): sizes, recipe, tap
  sets (``detector.taps``: ``fpn_to_pan``, ``pan_to_fpn``, ``backbone_to_pan``) and builders. Torch-free.
- ``YOLOv5`` / ``build_yolov5(size, num_classes)`` (``model.py``): the network, built layer by layer with
  Ultralytics' indices, so ``state_dict()`` keys and shapes equal those of their ``DetectionModel``.
  ``forward(images) -> DetectorOutput(head, teachers, students)`` in any mode (head = the per-level maps
  ``(B, 3, H, W, 5 + nc)``; neck taps keyed by stride, pairing from the tap set);
  ``inference_raw(images) -> (B, N, 5 + nc)`` decoded like their eval-mode ``Detect``;
  ``predict(images, conf=, iou=, max_det=)`` adds NMS (``detectors.ops.nms``). ``model.strides``,
  ``model.tap_channels``, ``model.detect`` (the ``Detect`` head: ``anchors`` in grid units, ``stride``,
  ``na``, ``nc``, ``nl``) are what the loss needs.
- ``blocks.py`` (Conv, Bottleneck, C3, SPPF, Concat), ``head.py`` (Detect and its decoding).
- ``weights.py``: ``load_weights(model, path)`` for a plain state dict or an official Ultralytics ``.pt``
  checkpoint, read with a restricted unpickler that never runs their code.
- ``loss.py``: ``YOLOv5Loss``, Ultralytics' ``ComputeLoss`` (terms box, obj, cls).

Nothing is imported here, so that ``detectors.yolov5.family`` can be read without torch.
"""
