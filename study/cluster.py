"""Where a study's trials run: the ``--address`` of a Ray cluster, parsed once, and what each mode needs.

``RayAddress.parse(text)`` reads ``--address`` (None/``local``: a local Ray; ``auto``: the cluster this
node belongs to; ``HOST:PORT``: a head's GCS; ``ray://HOST[:PORT]``: Ray Client, default port 10001).
Before Ray starts, ``check_reachable`` makes one bounded TCP connection (``ray.init`` itself retries an
unreachable head for minutes) and ``check_client_mode`` refuses, in one line each, what cannot work
when the Tune driver runs on the head (Ray Client): a SQLite store, a non-http store, a password in
the URI, storage that is a path on this machine. No ``ray`` import here (that is ``study.tune``).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from study import tracking
from study.errors import StudyError

RAY_CLIENT_PREFIX = "ray://"
RAY_CLIENT_DEFAULT_PORT = 10001
RAY_CONNECT_TIMEOUT_S = 5.0
# What the MLflow client on the head needs to authenticate: forwarded in the job's runtime_env (client mode).
FORWARDED_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                 "MLFLOW_TRACKING_INSECURE_TLS")


def is_storage_uri(storage: str) -> bool:
    """``s3://``, ``file://``...: a location every node can name; a plain path is local to one machine."""
    return "://" in storage


@dataclass(frozen=True)
class RayAddress:
    """``--address`` as given (``text``, None for a local Ray) and the endpoint to probe, if any."""

    text: str | None = None
    host: str | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> RayAddress:
        if not text or text in ("auto", "local"):
            return cls(text or None)
        client = text.startswith(RAY_CLIENT_PREFIX)
        rest = (text[len(RAY_CLIENT_PREFIX):] if client else text).split("/", 1)[0]
        host, sep, port = rest.rpartition(":")
        if not sep:
            return cls(text, rest, RAY_CLIENT_DEFAULT_PORT) if client and rest else cls(text)
        host = host.strip("[]")
        if not host or not port.isdigit():
            return cls(text)  # Ray resolves (or rejects) it itself
        return cls(text, host, int(port))

    @property
    def is_client(self) -> bool:
        return bool(self.text) and self.text.startswith(RAY_CLIENT_PREFIX)

    @property
    def endpoint(self) -> tuple[str, int] | None:
        """``(host, port)`` to probe; None for a local Ray, ``auto`` or anything Ray resolves itself."""
        return (self.host, self.port) if self.host is not None and self.port is not None else None

    def __str__(self) -> str:
        return self.text or "local"

    def check_reachable(self, timeout: float = RAY_CONNECT_TIMEOUT_S) -> None:
        """One TCP connection to the head's port, bounded by ``timeout``; ``StudyError`` with one line."""
        if self.endpoint is None:
            return
        host, port = self.endpoint
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except ConnectionRefusedError:
            reason = "connection refused"
        except TimeoutError:
            reason = f"no answer within {timeout:.0f} s"
        except socket.gaierror:
            reason = "unknown host"
        except OSError as exc:
            reason = (exc.strerror or type(exc).__name__).lower()
        what = "Ray Client server" if self.is_client else "GCS"
        raise StudyError(f"Ray head {host}:{port} unreachable ({reason}); is the head running and its {what} "
                         f"port {port} published? (--address {self.text})")

    def check_client_mode(self, uri: str, storage: str | None) -> None:
        """Refuse, in one line each, what cannot work when the Tune driver runs on the head."""
        if not self.is_client:
            return
        address = self.text
        if uri.startswith("sqlite:"):
            raise StudyError(f"--address {address}: with Ray Client the Tune driver runs on the head node, which "
                             f"cannot write this machine's SQLite store {uri}; set MLFLOW_TRACKING_URI (or "
                             "tracking.uri) to an http(s):// tracking server")
        if not tracking.is_http_uri(uri):
            raise StudyError(f"--address {address}: with Ray Client the head node logs to MLflow; expected an "
                             f"http(s):// tracking server, got {tracking.redact_uri(uri)}")
        if tracking.redact_uri(uri) != uri:
            raise StudyError(f"--address {address}: the tracking URI {tracking.redact_uri(uri)} embeds a password, "
                             "which would be stored with the Tune experiment; use MLFLOW_TRACKING_USERNAME and "
                             "MLFLOW_TRACKING_PASSWORD instead")
        if not storage or not is_storage_uri(storage):
            raise StudyError(f"--address {address}: with Ray Client the head node writes the trials and "
                             "checkpoints, so a path on this machine cannot hold them; pass --storage s3://... or "
                             "file:///a/mount/seen/at/that/path/by/this/machine/and/every/node")
        if storage.startswith("file://"):
            path = Path(storage[len("file://"):])
            if not (path.is_dir() or path.parent.is_dir()):
                raise StudyError(f"--address {address}: --storage {storage} is not mounted on this machine ({path} "
                                 "does not exist here); with Ray Client a file:// storage must be a mount that "
                                 "this machine and every node see at the same path; else pass --storage s3://...")
