"""Datasets, transforms and the training/evaluation data path (see CONTRIBUTING.md, "Data").

Readers of every format produce ``Sample``s; ``load_samples`` picks the reader from ``data.format``.
``build_dataloader`` and ``Batch`` need torch and are imported on first use, so dataset tools
(``mssd data synth|stats``) start without loading torch.
"""

from detectors.data.kitti import read_kitti
from detectors.data.loading import ensure_synthetic, load_samples
from detectors.data.sample import DataWarning, Sample, class_index
from detectors.data.synthetic import generate_synthetic_kitti
from detectors.data.transforms import LetterboxMeta, letterbox, letterbox_meta

_LAZY = {"Batch", "DetectionDataset", "build_dataloader"}

__all__ = ["Batch", "DataWarning", "DetectionDataset", "LetterboxMeta", "Sample", "build_dataloader",
           "class_index", "ensure_synthetic", "generate_synthetic_kitti", "letterbox", "letterbox_meta",
           "load_samples", "read_kitti"]


def __getattr__(name: str):
    if name in _LAZY:
        from detectors.data import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'detectors.data' has no attribute {name!r}")
