"""RetinaNet (ResNet-50-FPN) with torchvision's keys, post-processing and loss; MMDetection 2.x preset.

``family.py`` (torch-free) is what ``detectors.zoo`` reads; ``model.py`` the network, ``head.py`` its head,
``postprocess.py`` / ``loss.py`` torchvision's arithmetic, ``weights.py`` the checkpoint loaders and
``taps.py`` the MSSD tap sets.
"""
