"""YOLOv3(-SPP), YOLOv4-CSP and YOLOv7(-tiny, x) from WongKinYiu/yolov7, weight-compatible with its checkpoints.

What exists:

- ``family.py``: three families of the detector contract (``yolov3``, ``yolov4``, ``yolov7``): sizes,
  recipe (hyp.scratch.p5), tap sets and builders. Torch-free.
- ``layers.py``: one layer table per size in upstream's layer order (torch-free); ``model.py``:
  ``YOLOv7Family(size, num_classes)`` built from it, ``self.model[i]`` = their layer i, so
  ``state_dict()`` keys and shapes equal their ``models.yolo.Model``'s. ``forward(images) ->
  DetectorOutput``; ``inference_raw`` / ``predict`` decode as their eval-mode head; ``fuse()`` is their
  deployment form (Conv+BN, RepConv, IDetect's implicit terms folded).
- ``blocks.py`` (Conv, Bottleneck, CSP blocks, SPPCSPC, SPP, MP, SP, RepConv), ``head.py`` (Detect, IDetect:
  the interface the loss reads is in its docstring), ``taps.py`` (the tap sets and which layer each map is).
- ``weights.py``: ``load_weights(model, path)`` for their ``.pt`` checkpoints and plain state dicts.
- ``loss.py``: the repository's ``ComputeLoss`` / ``ComputeLossOTA``.

Nothing is imported here, so that ``detectors.yolov7.family`` can be read without torch.
"""
