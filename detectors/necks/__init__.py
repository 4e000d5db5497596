"""Necks shared by the ResNet-FPN families: torchvision's FeaturePyramidNetwork and its extra levels."""
