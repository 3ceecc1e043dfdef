"""The test harness: the same real components as `make up` (PostgreSQL, Redis, the AWS
emulator and the five services), on free ports in a temporary folder, started once per
test session and stopped after it. Runs beside a `make up` stack without touching it."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import grpc
import pytest
import pytest_asyncio

from cloudshelf.catalog.v1 import catalog_pb2_grpc
from cloudshelf.devstack.components import ManagedProcess, Redis, free_port, wait_until
from cloudshelf.devstack.identity import ADMIN_GROUP, SERVICE_GROUP
from cloudshelf.devstack.stack import REPO_ROOT, Stack, StackPorts, health_status
from cloudshelf.runtime.auth import AUTHORIZATION
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
        test_stack.start_workers()
        test_stack.wait_until_serving()
        test_stack.wait_until_workers_serve()
        yield test_stack
    finally:
        test_stack.down()
    # `make down` runs the same code: nothing it started may outlive it.
    left = [
        p.name
        for p in (
            *test_stack.services.values(),
            *test_stack.workers.values(),
            test_stack.redis,
            test_stack.aws,
        )
        if p.running()
    ]
    assert not left and not test_stack.postgres.running(), f"still running after down: {left}"


# --- identity: tokens from the stack's Cognito pool (moto) --------------------------------


@dataclass(frozen=True)
class User:
    name: str
    # The user id services see (the token's `sub`).
    subject: str
    token: str = field(repr=False)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """Call metadata that authenticates as the token's user."""
    return ((AUTHORIZATION, f"Bearer {token}"),)


class _BearerToken(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Sends `authorization: Bearer <token>` with every call of a channel."""

    def __init__(self, token: str) -> None:
        self.metadata = bearer(token)

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        metadata = grpc.aio.Metadata(*(details.metadata or ()), *self.metadata)
        return await continuation(
            grpc.aio.ClientCallDetails(
                details.method,
                details.timeout,
                metadata,
                details.credentials,
                details.wait_for_ready,
            ),
            request,
        )


def authorized_channel(address: str, token: str | None) -> grpc.aio.Channel:
    """A channel whose calls carry `token` (None: anonymous calls)."""
    interceptors = [_BearerToken(token)] if token is not None else []
    return grpc.aio.insecure_channel(address, interceptors=interceptors)


NewUser = Callable[..., User]


@pytest.fixture(scope="session")
def new_user(stack: Stack) -> NewUser:
    """new_user() -> a fresh shopper of the stack's pool; new_user(admin=True) an admin,
    new_user(service=True) a service identity."""

    def create(*, admin: bool = False, service: bool = False, prefix: str = "test") -> User:
        name = f"{prefix}-{secrets.token_hex(4)}"
        groups = [ADMIN_GROUP] if admin else [SERVICE_GROUP] if service else []
        stack.identity.ensure_user(name, groups)
        return User(name, stack.identity.subject(name), stack.identity.token(name))

    return create


@pytest.fixture(scope="session")
def shopper(new_user: NewUser) -> User:
    return new_user(prefix="shopper")


@pytest.fixture(scope="session")
def shopper_token(shopper: User) -> str:
    return shopper.token


@pytest.fixture(scope="session")
def admin(new_user: NewUser) -> User:
    return new_user(admin=True, prefix="admin")


@pytest.fixture(scope="session")
def admin_token(admin: User) -> str:
    return admin.token


@pytest.fixture(scope="session")
def service_token(new_user: NewUser) -> str:
    return new_user(service=True, prefix="service").token


class _AsAdmin:
    """channel_to's default: the session's admin token."""


AS_ADMIN = _AsAdmin()


class ChannelTo(Protocol):
    def __call__(
        self, service: str, token: str | _AsAdmin | None = AS_ADMIN
    ) -> grpc.aio.Channel: ...


@pytest_asyncio.fixture
async def channel_to(stack: Stack, admin_token: str) -> AsyncIterator[ChannelTo]:
    """channel_to("catalog") -> a grpc.aio channel to that service whose calls carry the
    session admin's token; channel_to("storefront", token=shopper_token) another user's,
    token=None none. Closed after the test."""
    channels: list[grpc.aio.Channel] = []

    def open_channel(service: str, token: str | _AsAdmin | None = AS_ADMIN) -> grpc.aio.Channel:
        chosen = admin_token if isinstance(token, _AsAdmin) else token
        channel = authorized_channel(stack.address(service), chosen)
        channels.append(channel)
        return channel

    yield open_channel
    for channel in channels:
        await channel.close()


class ServiceSpawner:
    """Starts extra service processes (own port, own overrides) beside the shared stack,
    for tests that stop or freeze something; every one is stopped after the test."""

    def __init__(self, stack: Stack, state_dir: Path, admin_token: str) -> None:
        self.stack = stack
        self.state_dir = state_dir
        self.admin_token = admin_token
        self.started: list[ManagedProcess] = []

    def channel(self, address: str, token: str | _AsAdmin | None = AS_ADMIN) -> grpc.aio.Channel:
        """A channel to a spawned service whose calls carry the session admin's token (or
        `token`; None: anonymous)."""
        chosen = self.admin_token if isinstance(token, _AsAdmin) else token
        return authorized_channel(address, chosen)

    def __call__(self, service: str, **overrides: str) -> tuple[ManagedProcess, str]:
        address = f"127.0.0.1:{free_port()}"
        # A spawned catalog (often on a scratch database, or frozen) must not take the
        # shared catalog's order events off its queue: it polls a queue of its own name.
        if service == "catalog":
            overrides.setdefault("CLOUDSHELF_CATALOG_ORDER_EVENTS_QUEUE", f"spawned-{free_port()}")
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

    @contextlib.asynccontextmanager
    async def own_catalog(
        self, catalog_dsn: str, redis_dir: Path, **overrides: str
    ) -> AsyncIterator[catalog_pb2_grpc.CatalogServiceAsyncStub]:
        """A catalog on `catalog_dsn` with a Redis of its own (nothing cached by the shared
        stack's catalog), serving, with `overrides` in its environment."""
        redis = Redis(redis_dir, free_port())
        redis.start()
        try:
            _, address = self(
                "catalog",
                CLOUDSHELF_POSTGRES_DSN=catalog_dsn,
                CLOUDSHELF_REDIS_URL=redis.url,
                **overrides,
            )
            await asyncio.to_thread(wait_for_health, address, "SERVING")
            async with self.channel(address) as channel:
                yield catalog_pb2_grpc.CatalogServiceStub(channel)  # type: ignore[misc]
        finally:
            redis.stop()

    def stop_all(self) -> None:
        for process in self.started:
            process.signal(signal.SIGCONT)  # a frozen process cannot handle SIGTERM
            process.stop()


@pytest.fixture
def spawn_service(stack: Stack, tmp_path: Path, admin_token: str) -> Iterator[ServiceSpawner]:
    spawner = ServiceSpawner(stack, tmp_path, admin_token)
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
async def catalog(channel_to: ChannelTo) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
    """The catalog as the session's admin (every RPC is open to them)."""
    return catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog"))  # type: ignore[return-value]


CatalogAs = Callable[[User], "catalog_pb2_grpc.CatalogServiceAsyncStub"]


@pytest_asyncio.fixture
async def catalog_as(channel_to: ChannelTo) -> CatalogAs:
    """catalog_as(user) -> the catalog as that user."""

    def stub(user: User) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
        return catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog", user.token))  # type: ignore[return-value]

    return stub


@pytest.fixture(scope="session")
def reviewers(new_user: NewUser) -> list[User]:
    """30 shoppers, for tests that need several authors (one review per user and book)."""
    return [new_user(prefix="reviewer") for _ in range(30)]


@pytest_asyncio.fixture
async def anonymous_catalog(channel_to: ChannelTo) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
    """The catalog without a token."""
    return catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog", None))  # type: ignore[return-value]


@pytest_asyncio.fixture
async def shopper_catalog(
    channel_to: ChannelTo, shopper_token: str
) -> catalog_pb2_grpc.CatalogServiceAsyncStub:
    """The catalog as the session's shopper."""
    return catalog_pb2_grpc.CatalogServiceStub(channel_to("catalog", shopper_token))  # type: ignore[return-value]


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
