"""``mssd ui --port P`` on a port another process owns refuses in one line and prints no URL."""

from __future__ import annotations

import socket

import pytest

from study.cli import main
from study.mlflow_view import check_port


def test_ui_on_a_busy_port_exits_non_zero_without_printing_a_url(tmp_path, capsys):
    with socket.socket() as owner:
        owner.bind(("127.0.0.1", 0))
        owner.listen()
        port = owner.getsockname()[1]
        code = main(["ui", "--workdir", str(tmp_path / "runs"), "--port", str(port)])
    out, err = capsys.readouterr()
    assert code == 2 and "http://" not in out
    assert err.strip() == f"mssd: error: --port {port}: 127.0.0.1:{port} is already in use by another process; " \
                          "pass another --port"
    assert not (tmp_path / "runs").exists()  # refused before the store is opened or created


def test_a_free_port_passes_the_check():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    check_port("127.0.0.1", port)


def test_a_port_out_of_range_is_refused():
    from detectors.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--port: expected a port in 1\.\.65535, got 70000"):
        check_port("127.0.0.1", 70000)
