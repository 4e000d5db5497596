"""A single training run (``mssd train``) in MLflow: params, per-epoch metrics, best checkpoint, config."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from study.mlflow_view import training_experiment_tags
from study.tracking.store import check_tracking, client, ensure_experiment, first_line
from study.tracking.writer import Writer, log_epoch, log_params, logged_epochs, numeric_metrics


class RunLogger:
    """A ``fit`` callback logging one training run through the same background writer as studies.

    ``close(status, error)`` ends the run; ``mssd train`` calls it also when ``fit`` raises.
    """

    def __init__(self, uri: str, experiment: str, *, run_name: str, params: dict[str, Any],
                 artifact_root: str | Path | None = None, config_text: str = "", tags: dict[str, str] | None = None,
                 resume_run_id: str | None = None) -> None:
        check_tracking(uri)
        self._client = client(uri)
        self._writer = Writer()
        experiment_id = ensure_experiment(self._client, uri, experiment,
                                          Path(artifact_root) if artifact_root else None,
                                          training_experiment_tags())  # the UI's model-training view
        if resume_run_id:
            self.run_id = resume_run_id
            self._epochs = logged_epochs(self._client, resume_run_id)
            self._client.update_run(resume_run_id, status="RUNNING")
        else:
            run = self._client.create_run(experiment_id, run_name=run_name,
                                          tags={"mssd.role": "train", **(tags or {})})
            self.run_id = run.info.run_id
            self._epochs = set()
            log_params(self._client, self.run_id, params)
            if config_text:
                with tempfile.TemporaryDirectory() as tmp:
                    (Path(tmp) / "config.yaml").write_text(config_text)
                    self._client.log_artifact(self.run_id, str(Path(tmp) / "config.yaml"))
        self._best: Path | None = None

    def backfill(self, history: list[dict[str, Any]]) -> None:
        """Log the epochs of a checkpoint's ``history`` that the run lacks (a process killed after writing
        the checkpoint but before its MLflow write landed); epochs already logged are skipped."""
        for metrics in history:
            epoch = metrics.get("epoch")
            if isinstance(epoch, (int, float)) and int(epoch) not in self._epochs:
                self._submit_epoch(int(epoch), metrics)

    def after_epoch(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
        self._submit_epoch(epoch, metrics)
        last = getattr(trainer, "last_checkpoint", None)
        if last is not None:
            self._best = Path(last).with_name("best.pt")

    def _submit_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        values, ts = numeric_metrics(metrics), int(time.time() * 1000)

        def op() -> None:
            if epoch not in self._epochs:
                log_epoch(self._client, self.run_id, epoch, values, ts)
                self._epochs.add(epoch)

        self._writer.submit(op, f"epoch {epoch}")

    def log_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        self._writer.submit(lambda: self._client.log_artifact(self.run_id, str(path), artifact_path),
                            f"artifact {path.name}")

    def close(self, status: str = "FINISHED", error: str | None = None, timeout: float | None = 600) -> int:
        if status == "FINISHED" and self._best is not None and self._best.is_file():
            self.log_file(self._best, "checkpoints")

        def op() -> None:
            if error:
                self._client.set_tag(self.run_id, "mssd.error", first_line(error, 500))
            self._client.set_terminated(self.run_id, status=status)

        self._writer.submit(op, "run end")
        return self._writer.flush(timeout)
