"""The MLflow UI as a user sees it: a small real study, `mssd ui STUDY`, headless Chromium on the URL it prints.

Checks the rendered page (its text and the runs table's cells, not pixels): the study opens in the
model-training view (not MLflow 3's GenAI one), every trial is a row named after its searched values
with its params, its `map` and its status, and ASHA-stopped or failed trials are visible as such. The
screenshots are saved under pytest's tmp folder (paths printed; `-s` shows them; `MSSD_TEST_ARTIFACTS=DIR`
keeps copies there) for a person to look at.

Chromium comes from Debian (`make test-deps` installs it as root); without it the test skips and says why.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from headless_chromium import HeadlessChromium, find_chromium
from study_helpers import REPO, free_port, write_space, write_tiny_config

pytestmark = pytest.mark.slow

SPACE = ("params:\n  losses.mssd.gamma: {distribution: grid, values: [0.5, 0.05, 0.005]}\n"
         "  losses.mad.sigma2: {distribution: grid, values: [2.0]}\n")
# The gamma=0.5 trial's loss goes non-finite in epoch 1: a failed trial the page must show as failed.
FAULT = "nonfinite@1:losses.mssd.gamma=0.5"

ROWS_JS = """(() => {
  const rows = {};
  for (const cell of document.querySelectorAll('.ag-row .ag-cell[col-id]')) {
    const row = cell.closest('.ag-row').getAttribute('row-index');
    // the last line: the run-name cell starts with its colour swatch's label
    (rows[row] = rows[row] || {})[cell.getAttribute('col-id')] = cell.innerText.trim().split('\\n').pop();
  }
  return Object.values(rows);
})()"""


@pytest.fixture(scope="module")
def ui_study(ray_address, tiny_data, tmp_path_factory):
    from study.tune import StudyOptions, run_study

    tmp = tmp_path_factory.mktemp("ui")
    config = write_tiny_config(tmp, tiny_data, epochs=2)
    space = write_space(tmp, SPACE)
    os.environ["MSSD_INJECT_FAULT"] = FAULT
    try:
        run_study(StudyOptions(config=str(config), space=str(space), name="ui-study", workdir=str(tmp / "runs"),
                               max_concurrent=2, verbose=0, asha=False, max_failures=0))
    finally:
        del os.environ["MSSD_INJECT_FAULT"]
    return tmp


@pytest.fixture(scope="module")
def ui_url(ui_study):
    """`mssd ui ui-study` running; yields the URL it printed."""
    port = free_port()
    server_log = (ui_study / "ui-stderr.log").open("w")  # read by the deprecation-warning test
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from study.cli import main; sys.exit(main())", "ui",
                             "ui-study", "--workdir", str(ui_study / "runs"), "--port", str(port)],
                            cwd=ui_study, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=server_log, text=True, start_new_session=True)
    try:
        first = proc.stdout.readline()
        match = re.search(r" at (http://\S+)", first)
        assert match, f"mssd ui printed {first!r}"
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the MLflow UI did not come up"
                time.sleep(0.5)
        yield match.group(1)
    finally:
        proc.terminate()  # mssd ui stops the server's process group on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        server_log.close()


@pytest.fixture
def browser(tmp_path):
    executable = find_chromium()
    if executable is None:
        pytest.skip("no chromium on PATH: `make test-deps` installs Debian's chromium (as root with apt-get)")
    chromium = HeadlessChromium(executable, profile=tmp_path / "profile")
    yield chromium
    chromium.close()


def _keep(shot: Path) -> Path:
    """pytest's tmp folders are pruned (3 kept): $MSSD_TEST_ARTIFACTS keeps a copy for a person to look at."""
    folder = os.environ.get("MSSD_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shot = Path(shutil.copy2(shot, Path(folder) / shot.name))
    return shot


def _close_assistant(browser) -> None:
    """MLflow 3.17 opens its assistant panel beside the page: closed, the screenshot shows more columns."""
    browser.evaluate("[...document.querySelectorAll('button')].find(b => b.getAttribute('aria-label') === 'Close')"
                     "?.click()")


def test_mssd_ui_prints_the_study_page_in_the_model_training_view(ui_url):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/#/experiments/\d+/runs\?workflowType=machine_learning"
                        r"&viewStateShareKey=mssd-trials", ui_url), ui_url


def test_mssd_ui_prints_no_deprecation_warnings_of_the_server(ui_url, ui_study):
    """Needs no browser: the server has imported its app once /health answers (the fixture waited for it)."""
    text = (ui_study / "ui-stderr.log").read_text()
    assert "uvicorn" in text.lower() or "Uvicorn" in text or "INFO" in text, text[-2000:]  # the server's log is here
    assert "DeprecationWarning" not in text, text[-2000:]


def test_the_study_opens_in_the_model_training_view_with_every_trial_its_params_map_and_status(
        ui_study, ui_url, browser, tmp_path_factory):
    from mlflow.tracking import MlflowClient

    from study import tracking

    uri = tracking.default_tracking_uri(ui_study / "runs")
    trials = {r.params["losses.mssd.gamma"]: r for r in tracking.study_trials(uri, "ui-study")}
    assert {k: r.status for k, r in trials.items()} == {"0.5": "nonfinite", "0.05": "completed",
                                                         "0.005": "completed"}
    browser.open(ui_url)
    names = [r.name for r in trials.values()]
    text = browser.wait_for_text("Run Name", "matching runs", *names, timeout=120)
    _close_assistant(browser)
    shots = tmp_path_factory.mktemp("ui-screenshots")
    shot = _keep(browser.screenshot(shots / "mlflow-ui-study.png"))
    print(f"\nscreenshot of the study page: {shot}")

    # Model training, not GenAI: the runs table, none of GenAI's overview (traces, token usage, issues).
    assert "Model training" in text and "Model registry" in text
    for genai in ("Token Usage", "Detect Issues", "Tool calls"):
        assert genai not in text, genai
    rows = {row.get("attributes.`Run Name`", ""): row for row in browser.evaluate(ROWS_JS)}
    assert set(names) <= set(rows), rows.keys()
    assert sorted(names) == sorted(["t00 gamma=0.5 sigma2=2", "t01 gamma=0.05 sigma2=2",
                                    "t02 gamma=0.005 sigma2=2"])
    for gamma, record in trials.items():
        row = rows[record.name]
        assert row["params.`losses.mssd.gamma`"] == gamma
        assert row["params.`losses.mad.sigma2`"] == "2.0"
        assert row["tags.`mssd.status`"] == record.status
        if record.status == "completed":
            assert float(row["metrics.`map`"]) == pytest.approx(record.metrics["map"], rel=1e-6, abs=1e-12)
        else:
            assert row["metrics.`map`"] == "-"
    # The parent run reads like the best trial, and sorts with the trials by map.
    client = MlflowClient(uri)
    parent = client.get_run(client.get_run(trials["0.05"].run_id).data.tags["mlflow.parentRunId"])
    top = max(r.metrics["map"] for r in trials.values() if r.status == "completed")
    best = next(r for r in trials.values() if r.name == parent.data.tags["mssd.best_trial"])
    assert best.status == "completed" and best.metrics["map"] == top  # (untrained trials may tie)
    assert parent.data.tags["mssd.trials"] == "2 completed, 1 nonfinite"
    assert parent.data.metrics["map"] == best.metrics["map"]
    assert parent.data.params["losses.mssd.gamma"] == best.params["losses.mssd.gamma"]
    assert rows["ui-study"]["metrics.`map`"] != "-"
    # Failed trials look failed: run status FAILED (the UI's status icon) and the status column.
    assert client.get_run(trials["0.5"].run_id).info.status == "FAILED"
    experiment = client.get_experiment_by_name("ui-study")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_the_chart_view_opens_on_the_study_charts(ui_url, browser, tmp_path_factory):
    browser.open(ui_url)
    browser.wait_for_text("Run Name", "matching runs", timeout=120)
    _close_assistant(browser)
    browser.evaluate("document.querySelector('input[type=radio][value=CHART]').click()")  # list | chart switch
    text = browser.wait_for_text("Parallel Coordinates", "losses.mssd.gamma vs. map", "losses.mad.sigma2 vs. map",
                                 timeout=60)
    browser.wait_for_text("Step", timeout=60)  # the line chart's axis: the charts have their data
    time.sleep(2)  # let the other charts finish drawing before the screenshot
    shot = _keep(browser.screenshot(tmp_path_factory.mktemp("ui-screenshots") / "mlflow-ui-charts.png"))
    print(f"\nscreenshot of the chart view: {shot}")
    # Our section comes first, before the per-metric sections MLflow generates.
    assert "\nStudy\n(4)\n" in text and text.index("\nStudy\n(4)\n") < text.index("\nloss\n")
