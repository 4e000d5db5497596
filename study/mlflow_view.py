"""How a study looks in the MLflow UI (3.x): experiment tags, run names and the page to open. Pure data.

What the UI does with them (read from MLflow 3.17's UI code, checked in a real browser by
``tests/study/test_mlflow_ui_browser.py``):

- ``mlflow.experimentKind = custom_model_development`` marks an experiment as model training (the
  UI's experiment-type setting; without it MLflow 3 treats new experiments as GenAI ones). The view a
  page opens in is the UI's global GenAI / Model training switch, kept in the browser and overridden
  by the URL's ``workflowType=machine_learning``: so the URLs we print carry it.
- ``mlflow.sharedViewState.<key>`` holds a runs-table view (JSON) the URL's ``viewStateShareKey``
  opens: ours sorts by the study metric (best first; a sort other than by date also lists child runs
  flat instead of folded under the parent), shows the metric, the searched parameters and the trial
  status as columns, and sets the chart view: the metric per epoch, parallel coordinates, and the
  metric against each searched parameter.
- Child runs are named after the trial and its searched values (``t07 gamma=0.05 sigma2=2``).

Nothing here imports mlflow: ``study.tracking`` writes these tags, ``mssd ui`` prints the URL (after
``check_port``: a URL on a port another process owns would open that process's page).
"""

from __future__ import annotations

import errno
import json
import re
import socket
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
SHARED_VIEW_PREFIX = "mlflow.sharedViewState."
VIEW_KEY = "mssd-trials"
STATUS_TAG = "mssd.status"
WORKFLOW_QUERY = "workflowType=machine_learning"
_CHARTS_SECTION = "mssd-study-charts"
MAX_SCATTER_CHARTS = 6


def short_name(key: str, keys: Iterable[str]) -> str:
    """``losses.mssd.gamma`` -> ``gamma``; longer where the last part alone is ambiguous."""
    parts = key.split(".")
    others = [k.split(".") for k in keys if k != key]
    for n in range(1, len(parts) + 1):
        tail = parts[-n:]
        if all(o[-n:] != tail for o in others):
            return ".".join(tail)
    return key


def short_value(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def trial_index(trial_id: str) -> int | None:
    """Ray's trial ids end in a zero-padded counter (``1d527_00007`` -> 7)."""
    match = re.search(r"_(\d+)$", trial_id)
    return int(match.group(1)) if match else None


def trial_run_name(trial_id: str, position: int, params: Mapping[str, Any], searched: Iterable[str]) -> str:
    """``t07 gamma=0.05 sigma2=2``: the trial's number and its searched values, short enough for a column.

    The number is Ray's trial counter (grid and random sweeps); with a search algorithm (Optuna) Ray's
    ids are bare hashes, so it is ``position``: the trial's place in the study's start order.
    """
    searched = list(searched)
    index = trial_index(trial_id)
    head = f"t{index if index is not None else position:02d}"
    point = params.get("design_point")  # a one_at_a_time design point (study.search_space.POINT_KEY)
    if isinstance(point, Mapping) and "label" in point:
        return f"{head} {point['label']}"
    values = " ".join(f"{short_name(k, searched)}={short_value(params.get(k))}" for k in searched if k in params)
    return f"{head} {values}".strip()


def _column(kind: str, key: str) -> str:
    return f"{kind}.`{key}`"


def _chart(kind: str, number: int, **fields: Any) -> dict[str, Any]:
    return {"uuid": f"mssd-chart-{number}", "type": kind, "runsCountToCompare": 100, "metricSectionId": _CHARTS_SECTION,
            "deleted": False, "isGenerated": False, **fields}


def trials_view(metric: str, mode: str, searched: list[str]) -> dict[str, Any]:
    """The runs table and charts a study opens with (MLflow's shared view state, as JSON-able data)."""
    charts = [
        _chart("LINE", 0, metricKey=metric, selectedMetricKeys=[metric], displayName=f"{metric} per epoch",
               lineSmoothness=0, xAxisKey="step", xAxisScaleType="linear", scaleType="linear",
               range={}, selectedXAxisMetricKey="", yAxisKey="metric", yAxisExpressions=[],
               ignoreOutliers=False, useGlobalXaxisKey=False, useGlobalLineSmoothing=False),
        _chart("PARALLEL", 1, selectedParams=list(searched), selectedMetrics=[metric], showAllRuns=True,
               displayName=f"parallel coordinates: searched parameters and {metric}"),
    ]
    for i, key in enumerate(searched[:MAX_SCATTER_CHARTS], start=2):
        charts.append(_chart("SCATTER", i, xaxis={"key": key, "type": "PARAM"}, yaxis={"key": metric, "type": "METRIC"},
                             displayName=f"{metric} vs {short_name(key, searched)}"))
    return {
        "searchFilter": "",
        "orderByKey": _column("metrics", metric),
        "orderByAsc": mode == "min",
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "selectedColumns": [_column("attributes", "Run Name"), _column("metrics", metric),
                            *(_column("params", k) for k in searched), _column("tags", STATUS_TAG),
                            _column("metrics", "epoch")],
        "runListHidden": False,
        "hideEmptyCharts": True,
        # Our section first; MLflow appends its own per-metric sections after it.
        "isAccordionReordered": True,
        "compareRunCharts": charts,
        "compareRunSections": [{"uuid": _CHARTS_SECTION, "name": "Study", "display": True, "isReordered": True,
                                "deleted": False, "isGenerated": False}],
    }


def experiment_tags(metric: str, mode: str, searched: list[str]) -> dict[str, str]:
    """Tags for a study's experiment: model-training kind and the trials view."""
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING,
            SHARED_VIEW_PREFIX + VIEW_KEY: json.dumps(trials_view(metric, mode, searched), separators=(",", ":"))}


def training_experiment_tags() -> dict[str, str]:
    """Tags for a ``mssd train`` experiment: model-training kind (its runs table needs no preset view)."""
    return {EXPERIMENT_KIND_TAG: MODEL_TRAINING}


def root_url(base: str) -> str:
    return f"{base.rstrip('/')}/#/experiments?{WORKFLOW_QUERY}"


def study_url(base: str, experiment_id: str, with_view: bool = True) -> str:
    """The study's runs page in the model-training view, opened on the trials view when it exists."""
    query = WORKFLOW_QUERY + (f"&viewStateShareKey={quote(VIEW_KEY)}" if with_view else "")
    return f"{base.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs?{query}"


def check_port(host: str, port: int) -> None:
    """Refuse, in one line (``ConfigError``), a ``--port`` the UI cannot serve on ``host``: out of range, or
    bound by another process. A bind test with ``SO_REUSEADDR``, as the server binds: a port left in
    TIME_WAIT by a UI that just stopped is free, one with a listener is not."""
    from detectors.errors import ConfigError

    if not 0 < port < 65536:
        raise ConfigError(f"--port: expected a port in 1..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: cannot resolve it ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"--port {port}: {host}:{port} is already in use by another process; pass "
                                  "another --port") from None
            raise ConfigError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror})") from None
