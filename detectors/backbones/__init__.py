"""Backbones shared by the ResNet-FPN families (FCOS, RetinaNet, Faster/Cascade R-CNN)."""
