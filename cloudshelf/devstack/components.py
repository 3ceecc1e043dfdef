"""The backing servers of the local stack, each a real process on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import asyncpg

LOCALHOST = "127.0.0.1"
# The local PostgreSQL's LC_CTYPE (glibc's built-in Unicode locale).
UNICODE_CTYPE = "C.UTF-8"


# `make up`'s services and workers listen on 50051-50069, inside the ephemeral range that
# bind(0) draws from: a test or bench stack taking one of them made `make up` fail to start.
LOCAL_MESH_PORTS = range(50050, 50070)


def free_port() -> int:
    """A port free now, never one of the local mesh's fixed ones."""
    while True:
        with socket.socket() as sock:
            sock.bind((LOCALHOST, 0))
            port = int(sock.getsockname()[1])
        if port not in LOCAL_MESH_PORTS:
            return port


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOCALHOST, port)) == 0


def wait_until(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s")


class ManagedProcess:
    """A background process remembered by a pid file, so a later command can stop it."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        state_dir: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.pid_file = state_dir / "run" / f"{name}.pid"
        self.log_file = state_dir / "logs" / f"{name}.log"
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def running(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie or a recycled pid is not ours.
        with contextlib.suppress(FileNotFoundError):
            if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return False
        return True

    def start(self) -> bool:
        """Starts the process unless it already runs; True when started now."""
        if self.running():
            return False
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # outlives `make up`; not hit by the terminal's ^C
            )
        self.pid_file.write_text(str(self._popen.pid))
        return True

    def signal(self, sig: signal.Signals) -> None:
        pid = self.pid
        if pid is not None and self.running():
            os.kill(pid, sig)

    def stop(self, timeout: float = 15.0) -> None:
        pid = self.pid
        if pid is not None and self.running():
            os.kill(pid, signal.SIGTERM)
            try:
                wait_until(lambda: not self.running(), timeout, f"{self.name} exit")
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda: not self.running(), 5, f"{self.name} kill")
        if self._popen is not None:
            self._popen.wait()
            self._popen = None
        self.pid_file.unlink(missing_ok=True)

    def wait_exit(self, timeout: float) -> int:
        """Waits for a process this object started; returns its exit code."""
        assert self._popen is not None, "only a process started here can be waited for"
        return self._popen.wait(timeout)


def postgres_bin_dir() -> Path:
    """PostgreSQL's server binaries: from PATH, else the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3])
    )
    if not candidates:
        raise FileNotFoundError("PostgreSQL server binaries not found (run `make up` to install)")
    return candidates[-1].parent


class Postgres:
    """A private PostgreSQL cluster: its own data folder, trust auth, 127.0.0.1 only.

    PostgreSQL refuses to run as root, so as root it runs as the `postgres` user.
    """

    SUPERUSER = "cloudshelf"

    def __init__(self, state_dir: Path, port: int, *, durable: bool = True) -> None:
        self.data_dir = state_dir / "postgres"
        self.log_file = state_dir / "logs" / "postgres.log"
        self.port = port
        self.durable = durable
        self.bin_dir = postgres_bin_dir()

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, capture_output=True, text=True)

    def _prepare_ownership(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        self.data_dir.chmod(0o700)
        if os.geteuid() == 0:
            shutil.chown(self.data_dir, "postgres", "postgres")
            shutil.chown(self.log_file, "postgres", "postgres")

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def start(self) -> bool:
        if self.running():
            return False
        self._prepare_ownership()
        if not self.initialized():
            result = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                self.SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                # Byte order for sorting (fast, and what the indexes were measured with);
                # Unicode for character classes and case: under LC_CTYPE C, to_tsvector
                # keeps 'Émile' as written and 'émile' finds nothing. A managed server
                # (en_US.UTF-8) folds the same way.
                "--locale=C",
                f"--lc-ctype={UNICODE_CTYPE}",
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(f"initdb failed: {result.stderr.strip()}")
        options = [
            f"-p {self.port}",
            f"-c listen_addresses={LOCALHOST}",
            "-c unix_socket_directories=''",
            "-c max_connections=200",
        ]
        if not self.durable:  # test clusters: speed over crash safety
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        result = self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            "60",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            " ".join(options),
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"postgres did not start (see {self.log_file}): {result.stderr.strip()}"
            )
        return True

    def stop(self) -> None:
        if self.running():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir))

    def dsn(self, database: str) -> str:
        return f"postgresql://{self.SUPERUSER}@{LOCALHOST}:{self.port}/{database}"

    async def create_databases(self, names: list[str]) -> list[str]:
        created = []
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            existing = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
            for name in names:
                if name not in existing:
                    await conn.execute(f'CREATE DATABASE "{name}"')
                    created.append(name)
        finally:
            await conn.close()
        return created


class Redis(ManagedProcess):
    def __init__(self, state_dir: Path, port: int) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError("redis-server not found (run `make up` to install)")
        data_dir = state_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            "redis",
            [
                server,
                "--port",
                str(port),
                "--bind",
                LOCALHOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(data_dir),
            ],
            state_dir,
        )
        self.port = port

    def start(self) -> bool:
        started = super().start()
        wait_until(lambda: port_open(self.port), 15, "redis")
        return started

    @property
    def url(self) -> str:
        return f"redis://{LOCALHOST}:{self.port}/0"


class AwsEmulator(ManagedProcess):
    """moto's server: DynamoDB (+ Streams), Kinesis, S3, Timestream and EventBridge."""

    def __init__(self, state_dir: Path, port: int) -> None:
        # moto's server with DynamoDB's atomicity restored (see aws_emulator.py).
        command = [sys.executable, "-m", "cloudshelf.devstack.aws_emulator"]
        super().__init__("aws-emulator", [*command, "-H", LOCALHOST, "-p", str(port)], state_dir)
        self.port = port

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def start(self) -> bool:
        started = super().start()
        wait_until(self._answers, 30, "aws emulator")
        return started

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"
