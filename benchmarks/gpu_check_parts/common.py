"""What every part of the GPU check shares: the sizes of a full and a smoke run, the run config, the
host-sync counter, peak memory, and a step clock.

Only torch, numpy and the project are imported here and in every part (the GPU machine has no ray,
optuna, mlflow, pycocotools or faster-coco-eval; tests/benchmarks/test_gpu_check_smoke.py blocks them).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import resource
import statistics
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

CLASSES = ["Car", "Pedestrian", "Cyclist"]

# The size each family's row of the paper's Table 1 uses (DESIGN.md). A family the zoo gains later and
# this table does not name is checked at its smallest size only, and the report says so.
PAPER_SIZES = {
    "yolov5": "yolov5s", "yolox": "yolox_s", "yolov6": "yolov6s", "yolov3": "yolov3", "yolov4": "yolov4_csp",
    "yolov7": "yolov7", "fcos": "fcos_resnet50_fpn", "faster_rcnn": "fasterrcnn_resnet50_fpn",
    "cascade_rcnn": "cascadercnn_resnet50_fpn", "retinanet": "retinanet_resnet50_fpn",
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big each part runs. ``full`` is the issue's setting on one CUDA device; ``smoke`` the same code
    at toy sizes on the CPU, so that the script cannot rot between the rare GPU loans."""

    device: str
    img: int  # parts b-e
    batch: int
    train_images: int
    val_images: int
    image_width: int
    image_height: int
    family_img: int  # part a
    family_batch: int
    family_steps: int
    paper_sizes: bool  # part a also at the paper's size
    comparators_everywhere: bool  # part a: each comparator on every family (else on the first family only)
    family_budget_s: float  # part a stops starting runs after this long (the rest reported as skipped)
    step_models: tuple[str, ...]  # part b
    step_steps: int
    step_skip: int  # first steps of part b not counted (cuDNN autotuning, compilation)
    compile_modes: tuple[str, ...]
    compile_backend: str
    profile_steps: int
    loader_workers: tuple[int, ...]  # part c
    caches: tuple[str, ...]
    pack_counts: tuple[int, ...]  # part e
    pack_cpus: int  # loader workers shared out between the packed trainings
    pack_steps: int
    pack_model: str
    eval_model: str  # part d (trained by part c's two epochs)


FULL = Sizes(
    device="cuda", img=640, batch=16, train_images=1600, val_images=400, image_width=1242, image_height=375,
    family_img=640, family_batch=8, family_steps=20, paper_sizes=True, comparators_everywhere=True,
    family_budget_s=200.0, step_models=("yolov5s", "yolox_s"), step_steps=60, step_skip=10,
    compile_modes=("none", "model", "step"), compile_backend="inductor", profile_steps=5, loader_workers=(4, 8),
    caches=("none", "ram"), pack_counts=(1, 2, 3), pack_cpus=12, pack_steps=40, pack_model="yolov5s",
    eval_model="yolov5s",
)

SMOKE = Sizes(
    device="cpu", img=64, batch=2, train_images=16, val_images=4, image_width=160, image_height=64,
    family_img=64, family_batch=2, family_steps=2, paper_sizes=False, comparators_everywhere=False,
    family_budget_s=600.0, step_models=("yolov5n",), step_steps=3, step_skip=1, compile_modes=("none", "model"),
    compile_backend="eager", profile_steps=1, loader_workers=(0, 1), caches=("none", "ram"), pack_counts=(1, 2),
    pack_cpus=0, pack_steps=2, pack_model="yolov5n", eval_model="yolov5n",
)


def run_config(sizes: Sizes, data_root: Path, name: str, *, img: int | None = None, batch: int | None = None,
               workers: int = 0, method: str = "mssd", teacher: Path | None = None, epochs: int = 2,
               steps: int | None = None, **overrides: Any):
    """A validated ``RunConfig``: ``name`` on the generated set, MSSD + MAD on (or ``method``), AMP, EMA,
    no warmup (the measured steps are ordinary ones), and evaluation only when a part asks for it
    (``eval_interval`` past the last epoch run by the trainer's loop)."""
    from detectors.config import parse_config

    raw: dict[str, Any] = {
        "seed": 0,
        "detector": {"name": name},
        "data": {"format": "synthetic", "root": str(data_root), "img_size": img or sizes.img, "workers": workers,
                 "classes": CLASSES,
                 "synthetic": {"images": sizes.train_images + sizes.val_images, "seed": 0, "width": sizes.image_width,
                               "height": sizes.image_height,
                               "val_fraction": sizes.val_images / (sizes.train_images + sizes.val_images)}},
        "losses": {"method": method},
        "train": {"epochs": epochs, "batch_size": batch or sizes.batch, "device": sizes.device, "amp": True,
                  "warmup_epochs": 0.0, "eval_interval": 10**6, "max_steps_per_epoch": steps},
        "eval": {"max_det": 300, "conf": 0.001},
    }
    if teacher is not None:
        raw["distill"] = {"teacher": {"name": name, "weights": str(teacher)}}
    for key, value in overrides.items():  # dotted paths as keyword names with "__": data__cache="ram"
        node = raw
        *parents, leaf = key.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_config(raw)


def ensure_data(sizes: Sizes, data_root: Path) -> float:
    """Generate the synthetic set once (not timed by any part); returns the seconds it took."""
    from detectors.data import ensure_synthetic

    started = time.perf_counter()
    data = run_config(sizes, data_root, "yolov5n").data
    ensure_synthetic(data.root, data.synthetic, workers=max(sizes.loader_workers) or None)
    return time.perf_counter() - started


class SyncCounter:
    """Host-device synchronisations inside the calls it wraps.

    CUDA: ``torch.cuda.set_sync_debug_mode("warn")`` warns at every synchronising call (``.item()``, a
    blocking copy, ``nonzero``...), switched on only inside the wrapped call so the loader's threads are
    not counted. CPU: nothing synchronises, so the proxy is every read of a tensor's value into Python
    (``item``, ``float``, ``int``, ``bool``, ``tolist``, ``numpy``): on a GPU each is a sync. Data-dependent
    shapes (``nonzero``, boolean indexing) are not counted on the CPU: the CUDA count is the real one."""

    READS = ("item", "__float__", "__int__", "__bool__", "tolist", "numpy")

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.count = 0
        self.sites: collections.Counter[str] = collections.Counter()  # file:line outside torch -> syncs
        self.method = ("torch.cuda.set_sync_debug_mode('warn') warnings" if self.cuda
                       else "Tensor.item/float/int/bool/tolist/numpy calls (CPU proxy)")

    def wrap(self, function):
        @functools.wraps(function)
        def counted(*args, **kwargs):
            with self.counting():
                return function(*args, **kwargs)
        return counted

    @contextlib.contextmanager
    def counting(self):
        if self.cuda:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                previous = torch.cuda.get_sync_debug_mode()
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    yield
                finally:
                    torch.cuda.set_sync_debug_mode(previous)
            for w in caught:
                if "synchroniz" in str(w.message):
                    self.count += 1
                    self.sites[f"{_project_path(w.filename)}:{w.lineno}"] += 1
            return
        originals = {name: getattr(torch.Tensor, name) for name in self.READS}

        def tally(original):
            def read(tensor, *args, **kwargs):
                self.count += 1
                self.sites[_caller()] += 1
                return original(tensor, *args, **kwargs)
            return read

        for name, original in originals.items():
            setattr(torch.Tensor, name, tally(original))
        try:
            yield
        finally:
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)


def _project_path(filename: str) -> str:
    path = Path(filename)
    return "/".join(path.parts[-3:])


def _caller() -> str:
    """The first frame outside torch and this module: where a value was read into Python."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/torch/" not in frame.filename and not frame.filename.endswith("common.py"):
            return f"{_project_path(frame.filename)}:{frame.lineno}"
    return "?"


class StepClock:
    """``after_step`` callback: wall time between consecutive steps, and the sync count at each step."""

    def __init__(self, counter: SyncCounter | None = None) -> None:
        self.counter = counter
        self.stamps: list[float] = []
        self.syncs: list[int] = []

    def after_step(self, trainer, step, items) -> None:
        self.stamps.append(time.perf_counter())
        self.syncs.append(self.counter.count if self.counter is not None else 0)

    def intervals(self, skip: int) -> list[float]:
        """Seconds per step after the first ``skip`` steps."""
        stamps = self.stamps[skip:]
        return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]

    def syncs_per_step(self, start: int = 0) -> list[int]:
        """Syncs counted in each step, from step ``start`` (0-based) on."""
        deltas = [b - a for a, b in zip([0, *self.syncs], self.syncs, strict=False)]
        return deltas[start:]


def count_trainer_syncs(trainer, counter: SyncCounter) -> None:
    """Count syncs in what a training step runs: ``train_step`` and ``optimizer_step`` (instance attributes
    win over the class's methods, so ``run_epoch`` calls the wrapped ones). The loss log's periodic read is
    counted apart: it is the one planned sync, every ``loss_read_interval`` steps and at the epoch's end."""
    trainer.train_step = counter.wrap(trainer.train_step)
    trainer.optimizer_step = counter.wrap(trainer.optimizer_step)


def release_loaders(trainer) -> None:
    """Stop the persistent loader workers of a trainer the check is done with.

    Left to the garbage collector, a dropped trainer's loaders are shut down inside a later cycle
    collection, where torch waits out its 5 s join timeout for each worker before terminating it (measured:
    ``gc.collect()`` after dropping a one-worker trainer took 5.3 s, an explicit shutdown 0.02 s). In the
    smoke run that wait landed inside later rows of part a (yolov3 20 s instead of 4 s, DeFeat 42 s instead
    of 2 s). torch has no public close for a DataLoader: ``_iterator`` is where it keeps the persistent one."""
    for name in ("train_loader", "val_loader"):
        loader = getattr(trainer, name, None)
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()
            loader._iterator = None


@contextlib.contextmanager
def loaders_released(trainer):
    """``with loaders_released(Trainer(...)) as trainer:``, the loaders' workers stopped on the way out."""
    try:
        yield trainer
    finally:
        release_loaders(trainer)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """(MiB, what it is): the CUDA allocator's peak since the last reset, or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "CUDA max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process peak RSS (CPU)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def environment(sizes: Sizes) -> dict[str, Any]:
    """Device, torch, CUDA and cuDNN versions: the report's header."""
    import os
    import platform

    cuda = torch.cuda.is_available() and sizes.device == "cuda"
    return {
        "device": torch.cuda.get_device_name(0) if cuda else f"CPU {platform.machine()} ({os.cpu_count()} cores)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(),
        "load": os.getloadavg(),
        "mode": "smoke (CPU, toy sizes)" if sizes.device == "cpu" else "full",
    }


def coco_backend() -> str | None:
    """The COCOeval implementation this machine has (``eval.backend``), or None: then the parts that
    score detections say so instead of failing (carry the faster-coco-eval wheel, benchmarks/README.md)."""
    import importlib.util

    for backend, module in (("faster", "faster_coco_eval"), ("pycocotools", "pycocotools")):
        try:
            if importlib.util.find_spec(module) is not None:
                return backend
        except (ImportError, ValueError):
            continue
    return None
