"""Faster R-CNN and Cascade R-CNN (ResNet-50-FPN), torchvision's layout; see ``model.py`` and ``family.py``."""
