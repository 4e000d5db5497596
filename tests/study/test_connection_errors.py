"""Connection errors are bounded and one line: an unreachable Ray head (a TCP probe before ``ray.init``,
which would retry for minutes), Ray Client inputs that cannot work, and a tracking server that is slow to
come up (retried with back-off) versus one that refuses our credentials (at once). No training here."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from study_helpers import REPO, SPACES

from study import tracking
from study.cli import main
from study.cluster import RayAddress
from study.errors import StudyError
from study.tune import StudyOptions, run_study


def _closed_port() -> int:
    """A loopback port with nothing listening (the OS picked it free; we closed it again)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("address, expected", [
    (None, None), ("auto", None), ("10.1.2.3:6379", ("10.1.2.3", 6379)),
    ("ray://head.example:10001", ("head.example", 10001)), ("ray://head.example", ("head.example", 10001)),
    ("ray://[::1]:10002", ("::1", 10002)),
])
def test_the_probed_endpoint_of_an_address(address, expected):
    assert RayAddress.parse(address).endpoint == expected


@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_an_unreachable_head_is_one_line_within_seconds(scheme):
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(StudyError) as info:
        RayAddress.parse(f"{scheme}127.0.0.1:{port}").check_reachable()
    assert time.monotonic() - started < 6
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"Ray head 127.0.0.1:{port} unreachable (connection refused)")


def test_mssd_tune_refuses_an_unreachable_head_before_anything_starts(tmp_path, capsys):
    port = _closed_port()
    started = time.monotonic()
    code = main(["tune", str(REPO / "configs" / "smoke.yaml"), "--space", str(SPACES / "mssd.yaml"),
                 "--workdir", str(tmp_path), "--name", "unreachable", "--address", f"127.0.0.1:{port}", "--quiet",
                 "--set", f"data.root={tmp_path / 'data'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"mssd: error: Ray head 127.0.0.1:{port} unreachable (connection refused); " \
                               f"is the head running and its GCS port {port} published? (--address 127.0.0.1:{port})"
    assert time.monotonic() - started < 30
    assert not (tmp_path / "unreachable").exists() and not (tmp_path / "mlflow.db").exists()


def _options(tmp_path, address: str, storage: str | None = None) -> StudyOptions:
    return StudyOptions(config=str(REPO / "configs" / "smoke.yaml"), space=str(SPACES / "mssd.yaml"),
                        overrides=[f"data.root={tmp_path / 'data'}"], name="client", workdir=str(tmp_path),
                        address=address, storage=storage)


def test_ray_client_refuses_the_embedded_sqlite_store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(StudyError) as info:
        run_study(_options(tmp_path, f"ray://127.0.0.1:{_closed_port()}", "s3://bucket/studies"))
    message = str(info.value)
    assert "\n" not in message and "SQLite" in message and "http(s)://" in message
    assert not (tmp_path / "client").exists()


def test_ray_client_refuses_storage_on_this_machine_and_passwords_in_the_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with pytest.raises(StudyError, match=r"--storage s3://") as info:
        run_study(_options(tmp_path, "ray://127.0.0.1:10001"))
    assert "\n" not in str(info.value)
    with pytest.raises(StudyError, match="is not mounted on this machine") as info:
        run_study(_options(tmp_path, "ray://127.0.0.1:10001", f"file://{tmp_path}/no/such/mount"))
    assert "\n" not in str(info.value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://me:secret@127.0.0.1:5000")
    with pytest.raises(StudyError, match="embeds a password") as info:
        run_study(_options(tmp_path, "ray://127.0.0.1:10001", "s3://bucket/studies"))
    assert "secret" not in str(info.value)


# --------------------------------------------------------------------------------------------- tracking


class _Handler(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        body = json.dumps({"experiments": []} if self.status == 200 else {"message": "nope"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _serve(port: int, status: int, delay: float = 0.0) -> tuple[threading.Thread, list]:
    """An HTTP server answering ``status`` on 127.0.0.1:port, listening only after ``delay`` s."""
    holder: list = []

    def run() -> None:
        time.sleep(delay)
        handler = type("Handler", (_Handler,), {"status": status})
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        holder.append(server)
        server.serve_forever(poll_interval=0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, holder


def _stop(thread: threading.Thread, holder: list) -> None:
    deadline = time.monotonic() + 10
    while not holder and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if holder:
        holder[0].shutdown()
        holder[0].server_close()
    thread.join(timeout=10)


def test_a_tracking_server_that_comes_up_late_is_waited_for(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    port = _closed_port()
    thread, holder = _serve(port, 200, delay=1.5)
    try:
        started = time.monotonic()
        assert "server reachable" in tracking.check_tracking(f"http://127.0.0.1:{port}", wait=15)
        assert 1.0 < time.monotonic() - started < 10
    finally:
        _stop(thread, holder)


def test_an_absent_tracking_server_is_given_up_after_the_wait():
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(tracking.TrackingError) as info:
        tracking.check_tracking(f"http://127.0.0.1:{port}", wait=1.5)
    assert 1.4 < time.monotonic() - started < 6
    assert "\n" not in str(info.value) and "unreachable (connection refused for" in str(info.value)


def test_a_port_nobody_listens_on_is_given_up_after_the_short_refused_wait_not_the_whole_wait():
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(tracking.TrackingError) as info:
        tracking.check_tracking(f"http://127.0.0.1:{port}", wait=30, refused_wait=1.0)
    assert 0.9 < time.monotonic() - started < 5
    assert "unreachable (connection refused for 1 s)" in str(info.value) and "\n" not in str(info.value)


def test_a_server_that_accepts_but_does_not_answer_gets_the_whole_wait():
    with socket.socket() as listening:  # the kernel accepts connections into the backlog; nobody answers
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        port = listening.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(tracking.TrackingError) as info:
            tracking.check_tracking(f"http://127.0.0.1:{port}", timeout=1.0, wait=2.5, refused_wait=0.5)
        waited = time.monotonic() - started
    assert 2.3 < waited < 8
    assert "unreachable (no answer for" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_fail_at_once(monkeypatch, status):
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "me")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    port = _closed_port()
    thread, holder = _serve(port, status)
    try:
        deadline = time.monotonic() + 10
        while not holder and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(tracking.TrackingError) as info:
            tracking.check_tracking(f"http://127.0.0.1:{port}", wait=30)
        assert time.monotonic() - started < 5
        assert f"refused access (HTTP {status}, user 'me')" in str(info.value) and "\n" not in str(info.value)
    finally:
        _stop(thread, holder)


# --------------------------------------------------------------------------------------------- Ray Client: the head's tracker


def _head_callback():
    from study.config import load_config
    from study.tune.mlflow_callback import MLflowCallback

    return MLflowCallback("study-x", load_config(REPO / "configs" / "smoke.yaml"), [], "map", {"uri": "http://127.0.0.1:5000", "study": "study-x",
                                                       "parent_run_id": "p1", "flush_timeout": 1.0})


def test_the_head_uses_its_own_tracking_uri_only_when_it_reaches_the_same_parent_run(monkeypatch):
    callback = _head_callback()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")  # as docker-compose.yml sets it on the head
    monkeypatch.setattr(tracking, "store_has_run", lambda uri, run_id, wait=5.0: (uri, run_id) == ("http://mlflow:5000", "p1"))
    assert callback._head_uri() == "http://mlflow:5000"
    monkeypatch.setattr(tracking, "store_has_run", lambda uri, run_id, wait=5.0: uri == "http://127.0.0.1:5000")
    assert callback._head_uri() == "http://127.0.0.1:5000"


def test_a_head_that_cannot_reach_mlflow_says_so_once_and_the_trials_go_on(monkeypatch, capsys):
    callback = _head_callback()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(tracking, "store_has_run", lambda *args, **kwargs: False)

    class Trial:
        trial_id, config, last_result, checkpoint = "t1", {}, {}, None

    for epoch in (1, 2):
        callback.on_trial_result(0, [], Trial(), {"epoch": epoch, "map": 0.1})  # must not raise
    callback.on_trial_complete(0, [], Trial())
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "the Ray head cannot log to MLflow" in lines[0] and "--resume" in lines[0], lines
