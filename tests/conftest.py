"""The test harness: the same real components as `make up` (PostgreSQL, Redis, the AWS
emulator and the five services), on free ports in a temporary folder, started once per
test session and stopped after it. Runs beside a `make up` stack without touching it."""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import grpc
import pytest
import pytest_asyncio

from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.devstack.components import ManagedProcess, free_port, wait_until
from cloudshelf.devstack.stack import REPO_ROOT, Stack, StackPorts, health_status
from cloudshelf.runtime.migrations import migrate_to_latest
from tests.otlp_receiver import OtlpReceiver


@pytest.fixture(scope="session")
def otlp() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


def _traversable_tmpdir() -> Path:
    # World-traversable (pytest's tmp_path is not): PostgreSQL runs as the `postgres`
    # user when the tests run as root.
    path = Path(tempfile.mkdtemp(prefix="cloudshelf-test-"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def state_dir() -> Iterator[Path]:
    path = _traversable_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A per-test folder that a private PostgreSQL cluster can live in."""
    path = _traversable_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(state_dir: Path, otlp: OtlpReceiver) -> Iterator[Stack]:
    test_stack = Stack(
        state_dir,
        StackPorts.free(),
        durable=False,
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "CLOUDSHELF_HEALTH_INTERVAL_SECONDS": "0.5",
            "CLOUDSHELF_LOG_LEVEL": "DEBUG",
        },
    )
    try:
        test_stack.start_backing_servers()
        asyncio.run(test_stack.provision())
        test_stack.start_services()
        test_stack.wait_until_serving()
        yield test_stack
    finally:
        test_stack.down()
    # `make down` runs the same code: nothing it started may outlive it.
    left = [
        p.name
        for p in (*test_stack.services.values(), test_stack.redis, test_stack.aws)
        if p.running()
    ]
    assert not left and not test_stack.postgres.running(), f"still running after down: {left}"


@pytest_asyncio.fixture
async def channel_to(stack: Stack) -> AsyncIterator[Callable[[str], grpc.aio.Channel]]:
    """channel_to("catalog") -> a grpc.aio channel to that service, closed after the test."""
    channels: list[grpc.aio.Channel] = []

    def open_channel(service: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(stack.address(service))
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        await channel.close()


class ServiceSpawner:
    """Starts extra service processes (own port, own overrides) beside the shared stack,
    for tests that stop or freeze something; every one is stopped after the test."""

    def __init__(self, stack: Stack, state_dir: Path) -> None:
        self.stack = stack
        self.state_dir = state_dir
        self.started: list[ManagedProcess] = []

    def __call__(self, service: str, **overrides: str) -> tuple[ManagedProcess, str]:
        address = f"127.0.0.1:{free_port()}"
        env = self.stack.service_env(service, {"CLOUDSHELF_LISTEN_ADDR": address, **overrides})
        process = ManagedProcess(
            f"{service}-{len(self.started)}-{secrets.token_hex(3)}",
            [sys.executable, "-m", f"services.{service}"],
            self.state_dir,
            env,
        )
        process.start()
        self.started.append(process)
        return process, address

    def stop_all(self) -> None:
        for process in self.started:
            process.signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
            process.stop()


@pytest.fixture
def spawn_service(stack: Stack, tmp_path: Path) -> Iterator[ServiceSpawner]:
    spawner = ServiceSpawner(stack, tmp_path)
    yield spawner
    spawner.stop_all()


def wait_for_health(address: str, expected: str, check: str = "", timeout: float = 30.0) -> None:
    last: list[str] = []

    def reached() -> bool:
        last[:] = [health_status(address, check)]
        return last[0] == expected

    try:
        wait_until(reached, timeout, f"{check or 'overall'} health {expected}")
    except TimeoutError as exc:
        raise AssertionError(f"{address} {check!r}: still {last[0]}, expected {expected}") from exc


@pytest_asyncio.fixture
async def catalog(
    channel_to: Callable[[str], grpc.aio.Channel],
) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
    return catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog"))  # type: ignore[return-value]


@pytest_asyncio.fixture
async def catalog_dsn(stack: Stack) -> AsyncIterator[str]:
    """A fresh, migrated, empty catalog database of its own (dropped after the test)."""
    name = f"catalog_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(stack.postgres.dsn("postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        dsn = stack.postgres.dsn(name)
        await migrate_to_latest(dsn, "services.catalog")
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def expect_error(call: Awaitable[object], code: grpc.StatusCode, *words: str) -> str:
    """Awaits a call that must fail with `code`; returns its details, which must name `words`."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        details = exc.details() or ""
        assert exc.code() == code, f"expected {code.name}, got {exc.code().name}: {details}"
        for word in words:
            assert word in details, f"{word!r} not in {details!r}"
        return details
    raise AssertionError(f"expected {code.name}, the call succeeded")


async def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`cloudshelf ARGS` as an operator or a CronJob runs it, against the catalog's stores."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cloudshelf.cli", *args],
        env=stack.service_env("catalog"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
