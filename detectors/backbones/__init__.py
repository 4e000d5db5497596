"""Backbones that are not a family's own: ResNet-50 with its FPN (``resnet.py``, ``resnet_fpn.py``, shared by
FCOS, RetinaNet and Faster/Cascade R-CNN) and ConvNeXt-T (``convnext.py``, the ``yolov5s_convnext`` backbone)."""
