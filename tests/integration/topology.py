"""The team topology of docker-compose.yml, built from real processes on loopback.

PostgreSQL (a throwaway cluster on a free port), ``mlflow server`` on it with proxied artifacts in a
local folder (optionally ``--app-name basic-auth``), and a Ray cluster of a head plus worker nodes, each
``ray start --block`` in its own process group so a test can take one node away as abruptly as a lost
machine. Every wait is bounded; every ``stop`` is safe to call twice. Secrets are generated per run.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
LOOPBACK = "127.0.0.1"


class ServiceError(RuntimeError):
    """A service of the topology did not start or stop in time; the message names it and its log."""


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it, so parallel runs do not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.25) -> None:
    """Poll ``predicate`` until it is true; at most ``timeout`` seconds, then ``ServiceError``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise ServiceError(f"timed out after {timeout:.0f} s waiting for {what}")


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def log_tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def stop_process_group(proc: subprocess.Popen | None, *, sig: int = signal.SIGTERM, grace: float = 20) -> None:
    """Signal a process started with ``start_new_session=True`` and its whole group; SIGKILL after ``grace``."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _parent_pid(pid: int) -> int | None:
    try:
        # /proc/PID/stat: "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), whatever process group or session it moved to."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            parent = _parent_pid(int(entry.name))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry.name))
    out, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def scratch_dir(prefix: str) -> Path:
    """A short path under /tmp (Ray's unix sockets must stay under 108 characters; pytest's tmp_path is long)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


# --------------------------------------------------------------------------------------------- PostgreSQL


def find_postgres_bin() -> Path | None:
    """The newest Debian PostgreSQL bin folder, or one on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name))
    for folder in reversed(candidates):
        if Path(folder, "initdb").exists():
            return Path(folder)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def install_postgres() -> str | None:
    """Install Debian's postgresql when we are root and apt exists; returns why not, or None when done.

    CI installs it through ``make test-deps``; this covers a bare ``pytest`` run on such a machine.
    """
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return "PostgreSQL binaries not found and not root with apt-get to install them (run `make test-deps`)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "install", "-y", "-q", "postgresql"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "postgresql"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` timed out after 300 s"
        if done.returncode == 0 and cmd[1] == "install":
            return None
    return f"`apt-get install postgresql` failed: {done.stderr.strip().splitlines()[-1:]}"


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster: superuser ``mssd`` with a random password, password auth on TCP."""

    bin_dir: Path
    user: str = "mssd"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: scratch_dir("mssd-pg-"))
    proc: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "postgres.log"

    def _as_owner(self, cmd: list[str]) -> list[str]:
        # initdb and postgres refuse to run as root: drop to the `postgres` system user when we are root.
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *cmd]
        return cmd

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        done = subprocess.run(
            self._as_owner([str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user,
                            f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                            "--encoding=UTF8", "--no-sync"]),
            capture_output=True, text=True, timeout=120,
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise ServiceError(f"initdb failed: {done.stderr.strip()[-500:]}")

    def start(self) -> None:
        """Start (or restart after ``stop``/``kill``) on the same port and data; wait until it accepts logins."""
        log = open(self.log_path, "a")  # noqa: SIM115 - the child owns it
        if os.geteuid() == 0:
            shutil.chown(self.log_path, "postgres", "postgres")
        self.proc = subprocess.Popen(
            self._as_owner([str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                            "-c", f"listen_addresses={LOOPBACK}", "-c", f"unix_socket_directories={self.root}",
                            # a test database: durability traded for speed
                            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                            "-c", "max_connections=200"]),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        wait_until(self._ready, timeout=60, what=f"PostgreSQL on port {self.port} (log: {self.log_path})")

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceError(f"PostgreSQL exited with {self.proc.returncode}:\n{log_tail(self.log_path)}")
        return self.psql("SELECT 1", check=False).returncode == 0

    def psql(self, sql: str, *, database: str = "postgres", check: bool = True) -> subprocess.CompletedProcess:
        env = dict(os.environ, PGPASSWORD=self.password, PGCONNECT_TIMEOUT="3")
        done = subprocess.run(
            [str(self.bin_dir / "psql"), "-h", LOOPBACK, "-p", str(self.port), "-U", self.user, "-d", database,
             "-v", "ON_ERROR_STOP=1", "-tAc", sql],
            env=env, capture_output=True, text=True, timeout=30,
        )
        if check and done.returncode != 0:
            raise ServiceError(f"psql {sql!r} failed: {done.stderr.strip()}")
        return done

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return name

    def uri(self, database: str, *, password: str | None = None, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}:{password or self.password}@{LOOPBACK}:{self.port}/{database}"

    def stop(self, *, fast: bool = True) -> None:
        """SIGINT is PostgreSQL's 'fast' shutdown: clients are disconnected, data stays consistent."""
        stop_process_group(self.proc, sig=signal.SIGINT if fast else signal.SIGTERM, grace=30)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------------------------- MLflow


@dataclass
class MlflowServer:
    """``mlflow server`` on a PostgreSQL database with proxied artifacts in a local destination folder."""

    backend_uri: str = field(repr=False)
    artifacts_dir: Path
    auth: bool = False
    auth_db_uri: str | None = field(default=None, repr=False)
    admin_user: str = "admin"
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(18), repr=False)
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: scratch_dir("mssd-mlflow-"))
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "mlflow-server.log"

    @property
    def allowed_hosts(self) -> str:
        return f"{LOOPBACK}:{self.port},localhost:{self.port}"

    def command(self) -> list[str]:
        cmd = [str(VENV_BIN / "mlflow"), "server",
               "--backend-store-uri", self.backend_uri,
               "--artifacts-destination", self.artifacts_dir.as_uri(),
               "--serve-artifacts",
               "--host", LOOPBACK, "--port", str(self.port),
               "--workers", "1",
               "--allowed-hosts", self.allowed_hosts]
        if self.auth:
            cmd += ["--app-name", "basic-auth"]
        return cmd

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
        # MLflow's job runner (two more processes importing mlflow, for its GenAI jobs) serves nothing mssd
        # does: without it the server answers in about half the time (9.5 s against 19-22 s measured on
        # the 2-core box), and each restart of the fault tests pays that again.
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
        if self.auth:
            ini = self.root / "basic_auth.ini"
            ini.write_text(
                "[mlflow]\n"
                "default_permission = READ\n"
                f"database_uri = {self.auth_db_uri or 'sqlite:///' + str(self.root / 'auth.db')}\n"
                f"admin_username = {self.admin_user}\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            ini.chmod(0o600)
            env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
            # The password only through the environment, as docker-compose.yml passes it from .env.
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = self.admin_password
            env["MLFLOW_FLASK_SERVER_SECRET_KEY"] = secrets.token_hex(16)
        return env

    def start(self, *, timeout: float = 120) -> None:
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "a")  # noqa: SIM115 - the child owns it
        log.write(f"\n---- start {self.starts + 1} ----\n")
        log.flush()
        self.proc = subprocess.Popen(self.command(), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.root, start_new_session=True)
        log.close()
        self.starts += 1
        wait_until(self._healthy, timeout=timeout, interval=0.5,
                   what=f"mlflow server on port {self.port} (log: {self.log_path})")
        # /health answers before the app (and the auth store) has finished loading: the first real
        # request can take many seconds on a busy machine. Make one, so tests start on a ready server.
        wait_until(self._serves_api, timeout=timeout, interval=1,
                   what=f"mlflow server API on port {self.port} (log: {self.log_path})")

    def _serves_api(self) -> bool:
        request = urllib.request.Request(f"{self.url}/api/2.0/mlflow/experiments/search?max_results=1")
        if self.auth:
            token = base64.b64encode(f"{self.admin_user}:{self.admin_password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceError(f"mlflow server exited with {self.proc.returncode}:\n{log_tail(self.log_path)}")
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        stop_process_group(self.proc, grace=20)

    def kill(self) -> None:
        """Gone at once (SIGKILL), as a crashed or unplugged server: no graceful drain of requests."""
        stop_process_group(self.proc, sig=signal.SIGKILL, grace=10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def client_env(self) -> dict[str, str]:
        """What a client (``mssd tune``) needs to reach this server."""
        env = {"MLFLOW_TRACKING_URI": self.url}
        if self.auth:
            env |= {"MLFLOW_TRACKING_USERNAME": self.admin_user, "MLFLOW_TRACKING_PASSWORD": self.admin_password}
        return env


# --------------------------------------------------------------------------------------------- Ray


@dataclass
class RayNode:
    name: str
    proc: subprocess.Popen
    log_path: Path


@dataclass
class RayCluster:
    """A Ray head plus worker nodes on loopback, each a ``ray start --block`` process group.

    Each node gets its own loopback address (head 127.0.0.2, workers 127.0.0.3, ...): Ray rewrites
    127.0.0.1 to the machine's routable address, and distinct addresses make the nodes look like
    machines. Token authentication is on (as in docker-compose.yml), with a token made per run. The
    head's temp dir is private, so ``ray.init()`` elsewhere on the machine never finds this cluster.
    Ray's gRPC servers bind every interface (Ray has no bind option); all traffic here is loopback.
    """

    cpus_per_node: int = 1
    head_ip: str = "127.0.0.2"
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: scratch_dir("mssd-ray-"))
    token: str = field(default_factory=lambda: secrets.token_hex(32), repr=False)
    head: RayNode | None = None
    workers: list[RayNode] = field(default_factory=list)
    started_workers: int = 0

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """What a driver (``mssd tune --address``) needs to join this cluster."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": self.token, "RAY_USAGE_STATS_ENABLED": "0"}

    def _start_node(self, name: str, ip: str, args: list[str]) -> RayNode:
        # Several nodes share one host: every per-node port is chosen free instead of Ray's fixed defaults.
        ports = [f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
                 f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}",
                 f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}"]
        log_path = self.root / f"{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
        env |= self.client_env()
        # A lost node is declared dead after ~3 s instead of Ray's default ~30 s (GCS health checks).
        env |= {"RAY_health_check_period_ms": "1000", "RAY_health_check_timeout_ms": "1000",
                "RAY_health_check_failure_threshold": "3"}
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                [str(VENV_BIN / "ray"), "start", "--block", "--disable-usage-stats",
                 f"--node-ip-address={ip}", f"--num-cpus={self.cpus_per_node}", "--num-gpus=0",
                 "--object-store-memory=100000000", *ports, *args],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.root,
            )
        return RayNode(name, proc, log_path)

    def start(self, workers: int = 1) -> None:
        self.head = self._start_node("head", self.head_ip,
                                     ["--head", f"--port={self.port}", f"--temp-dir={self.root / 't'}",
                                      "--include-dashboard=false"])
        self._wait_started(self.head)
        for _ in range(workers):
            self.add_worker()

    def add_worker(self) -> RayNode:
        self.started_workers += 1
        ip = f"127.0.0.{2 + self.started_workers}"
        node = self._start_node(f"worker{self.started_workers}", ip, [f"--address={self.address}"])
        self.workers.append(node)
        self._wait_started(node)
        return node

    def _wait_started(self, node: RayNode) -> None:
        """``ray start`` logs "Ray runtime started." once its raylet has registered with the GCS."""

        def started() -> bool:
            if node.proc.poll() is not None:
                raise ServiceError(f"ray node {node.name} exited:\n{log_tail(node.log_path)}")
            return "Ray runtime started." in node.log_path.read_text(errors="replace")

        wait_until(started, timeout=90, interval=0.5, what=f"Ray node {node.name} (log: {node.log_path})")

    def alive_nodes(self) -> int:
        """Active nodes as ``ray status`` reports them (the CLI, so this process never imports ray)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")} | self.client_env()
        try:
            done = subprocess.run([str(VENV_BIN / "ray"), "status", f"--address={self.address}"],
                                  env=env, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return 0
        if done.returncode != 0:
            return 0
        # "Active:" is followed by one " 1 node_<id>" line per live node, up to "Pending:".
        section = done.stdout.split("Active:", 1)[-1].split("Pending:", 1)[0]
        return len(re.findall(r"^\s*1 node_[0-9a-f]+", section, flags=re.MULTILINE))

    def wait_alive_nodes(self, count: int, *, timeout: float = 60) -> None:
        wait_until(lambda: self.alive_nodes() == count, timeout=timeout, interval=1,
                   what=f"{count} live Ray node(s) at {self.address}")

    def kill_worker(self, node: RayNode) -> None:
        """Take a worker node away at once, as a lost machine: SIGKILL to its raylet and every process under
        it. Trial workers run in process groups of their own and would otherwise go on reporting (over
        their direct connection to the driver) until they notice that their raylet is gone."""
        tree = descendants(node.proc.pid)
        stop_process_group(node.proc, sig=signal.SIGKILL, grace=10)
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() and not _zombie(pid) for pid in tree),
                   timeout=15, what=f"the processes of Ray node {node.name} to die")
        self.workers.remove(node)

    def stop(self) -> None:
        # SIGKILL to each node's group: a SIGTERM'd head drains for 30 s and nothing here needs a clean exit.
        for node in [*self.workers, self.head]:
            if node is not None:
                stop_process_group(node.proc, sig=signal.SIGKILL, grace=10)
        self.workers.clear()
        self.head = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def ensure_running(postgres: PostgresServer, mlflow: MlflowServer) -> None:
    """Restart PostgreSQL and the MLflow server when an earlier fault test left them stopped."""
    if postgres.proc is None or postgres.proc.poll() is not None:
        postgres.start()
    if mlflow.proc is None or mlflow.proc.poll() is not None:
        mlflow.start()
