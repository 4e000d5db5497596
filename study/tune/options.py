"""What ``mssd tune`` is asked to do (``StudyOptions``, validated on construction) and what it reports
back (``StudySummary``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

from detectors.errors import ConfigError
from study.cluster import RayAddress
from study.study_files import check_study_name


@dataclass
class StudyOptions:
    config: str
    space: str
    overrides: list[str] = field(default_factory=list)
    name: str | None = None
    workdir: str = "runs"
    samples: int | None = None  # sampled spaces: number of trials (default 8); grid: repeats (default 1)
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    storage: str | None = None  # default: the workdir; any pyarrow URI (s3://, gs://, file:///shared)
    resume: bool = False
    metric: str = "map"
    mode: str = "max"
    asha: bool = True
    # ASHA's first rung; None: a quarter of train.epochs (docs/findings.md: before that the ranking of
    # trials is noise, and a 1-epoch grace period stopped the eventual winner of a 16-trial study).
    grace_period: int | None = None
    reduction_factor: float = 2.0
    max_failures: int = 2
    keep_checkpoints: int = 2
    seed: int | None = None
    verbose: int | None = None  # None: a live table on a terminal only; 0: never; >= 2: all of Ray's output
    flush_timeout: float = 300.0

    def __post_init__(self) -> None:
        """Every option checked before anything starts; each error names the command-line flag."""
        if self.name is not None:
            check_study_name(self.name)
        _at_least("--samples", self.samples, 1)
        _at_least("--max-concurrent", self.max_concurrent, 1)
        if self.grace_period is not None:
            _at_least("--grace-period", self.grace_period, 1)
        _at_least("--max-failures", self.max_failures, 0)
        _at_least("--keep-checkpoints", self.keep_checkpoints, 1)
        if not self.cpus_per_trial > 0:
            raise ConfigError(f"--cpus-per-trial: expected a number > 0, got {self.cpus_per_trial}")
        check_gpus_per_trial(self.gpus_per_trial)
        if not self.reduction_factor > 1:
            raise ConfigError(f"--reduction-factor: expected a number > 1, got {self.reduction_factor}")
        if self.mode not in ("max", "min"):
            raise ConfigError(f"--mode: expected max or min, got {self.mode!r}")

    @cached_property
    def ray_address(self) -> RayAddress:
        return RayAddress.parse(self.address)

    def to_json(self) -> dict:
        """What ``study.json`` records (``--resume`` rebuilds the options from it)."""
        return {k: v for k, v in asdict(self).items() if k != "ray_address"}


def check_gpus_per_trial(gpus: float) -> None:
    """``--gpus-per-trial``: >= 0, a fraction below 1 or a whole number (what Ray can schedule)."""
    if gpus < 0 or (gpus > 1 and gpus != int(gpus)):
        raise ConfigError(f"--gpus-per-trial: expected 0, a fraction below 1 (0.5, 0.25: trials sharing a GPU) or "
                          f"a whole number, got {gpus:g}")


def check_local_gpus(gpus: float, address: str | None, *, cuda_available: bool | None = None) -> None:
    """On the local Ray (no ``address``), GPU trials only where this machine has a CUDA GPU: otherwise every
    trial would wait for a GPU forever. ``cuda_available`` None: ask torch."""
    if gpus > 0 and not address:
        if cuda_available is None:
            import torch

            cuda_available = torch.cuda.is_available()
        if not cuda_available:
            raise ConfigError(f"--gpus-per-trial {gpus:g}: this machine has no CUDA GPU for the local Ray, so no "
                              "trial could start; pass 0 (CPU trials) or --address of a cluster with GPUs")


def _at_least(flag: str, value: int | None, low: int) -> None:
    if value is not None and value < low:
        raise ConfigError(f"{flag}: expected at least {low}, got {value}")


@dataclass
class StudySummary:
    name: str
    folder: Path
    tracking_uri: str
    statuses: dict[str, int]
    best_trial: str | None
    best_value: float | None
    unlogged: int  # MLflow writes still pending at exit (back-filled by --resume)
    elapsed_s: float
    metric: str = "map"

    @property
    def succeeded(self) -> bool:
        """At least one trial trained all its epochs to a finite value of the metric."""
        return self.best_trial is not None

    @property
    def counts(self) -> str:
        return ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items())) or "no trial"

    def describe(self, workdir: str | Path) -> str:
        """What a user reads at the end of a sweep: counts, the best trial, the commands to run next."""
        lines = [f"study {self.name}: {self.counts} in {self.elapsed_s:.0f} s; folder {self.folder}"]
        if self.succeeded:
            # 4 significant digits: an early mAP of 0.00012 must not read as 0.0000
            lines.append(f"best trial {self.best_trial}: {self.metric} {self.best_value:.4g}")
            lines.append(f"next: mssd export {self.name} --workdir {workdir} --out best.yaml;  "
                         f"mssd report {self.name} --workdir {workdir};  mssd ui {self.name} --workdir {workdir}")
        return "\n".join(lines)

    def failure(self) -> str:
        """The one line ``mssd tune`` exits with when no trial completed."""
        return (f"study {self.name}: no trial completed with a finite {self.metric} ({self.counts}); each "
                f"trial's error is its MLflow run's mssd.error tag (`mssd report {self.name}` lists them)")


def resolve_grace_period(grace_period: int | None, epochs: int) -> int:
    """ASHA's grace period in epochs: the one given, else a quarter of the trials' epochs (at least 1)."""
    return grace_period if grace_period is not None else max(1, epochs // 4)
