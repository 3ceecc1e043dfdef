"""Connections to the backing stores, opened once per process and closed at shutdown.

Each opener registers its clean-up on the service's exit stack and returns a health check
for the runtime's dependency monitor.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
import asyncpg
import redis.asyncio as aioredis
from aiobotocore.config import AioConfig
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.events import EventBridgePublisher, OutboxRelay, OutboxTables, RelayPolicy
from cloudshelf.runtime.health import Dependency


async def init_postgres_connection(conn: asyncpg.Connection) -> None:
    # jsonb/json come back as Python objects, not str (asyncpg#221).
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


class PostgresProbe:
    """The health check's own PostgreSQL connection, kept between checks and reopened when
    broken. It never borrows from the request pool: a pool busy with slow queries is load,
    not an outage, and must not take the pod out of its Service."""

    def __init__(self, settings: Settings, pools: Sequence[asyncpg.Pool]) -> None:
        self.dsn = settings.postgres_dsn
        self.application_name = f"{settings.service}-health"
        self.pools = list(pools)
        self.connection: asyncpg.Connection | None = None

    async def check(self) -> None:
        try:
            if self.connection is None or self.connection.is_closed():
                self.connection = await asyncpg.connect(
                    self.dsn, server_settings={"application_name": self.application_name}
                )
            await self.connection.fetchval("SELECT 1")
        except BaseException as exc:
            # Timed out (cancelled mid-query) or broken: its state is unknown, start over.
            self._drop()
            if isinstance(
                exc,
                asyncpg.exceptions.InterfaceError
                | asyncpg.exceptions.ConnectionDoesNotExistError
                | OSError,
            ):
                # A restarted server leaves dead connections in the pools too (asyncpg#385).
                for pool in self.pools:
                    pool.expire_connections()
            raise

    def _drop(self) -> None:
        if self.connection is not None:
            self.connection.terminate()
            self.connection = None

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close(timeout=2)
            self.connection = None


async def keep_session(connection: asyncpg.Connection) -> None:
    """A pooled connection's reset on release: nothing beyond asyncpg's own (an open
    transaction rolled back, listeners dropped). Its default sends RESET ALL, CLOSE ALL,
    UNLISTEN * and pg_advisory_unlock_all() on every release: a second round trip for every
    query made through the pool (measured: ~14% of the catalog's CPU on cold searches) to
    undo what no service does (session SETs, LISTEN, advisory locks and cursors outside a
    transaction: transaction-scoped ones end with it)."""


async def open_postgres(
    settings: Settings, stack: AsyncExitStack
) -> tuple[asyncpg.Pool, Dependency]:
    """A connection pool that tolerates PostgreSQL being down at start: connections are made
    on demand, and the health check reports the outage until it is back."""
    # Full-text queries need plans that see the actual search terms (generic plans after
    # five executions are catastrophically slow for rare words).
    pool = await _open_pool(settings, stack, "force_custom_plan", settings.service)
    return pool, _probe(settings, stack, [pool])


async def open_postgres_with_generic_plans(
    settings: Settings, stack: AsyncExitStack
) -> tuple[asyncpg.Pool, asyncpg.Pool, Dependency]:
    """open_postgres's pool, and a second one to the same server whose prepared statements
    keep one generic plan (plan_cache_mode=force_generic_plan): for statements whose best
    plan is the same for any argument and costs more to make than to run. plan_cache_mode
    is a session setting, hence a pool of its own; the one health check covers both."""
    pool = await _open_pool(settings, stack, "force_custom_plan", settings.service)
    generic = await _open_pool(settings, stack, "force_generic_plan", f"{settings.service}-generic")
    return pool, generic, _probe(settings, stack, [pool, generic])


async def _open_pool(
    settings: Settings, stack: AsyncExitStack, plan_cache_mode: str, application_name: str
) -> asyncpg.Pool:
    pool = asyncpg.create_pool(
        settings.postgres_dsn,
        min_size=settings.postgres_pool_min_size,
        max_size=settings.postgres_pool_max_size,
        init=init_postgres_connection,
        # JIT compiles for 60-80 ms on every large query and saves less than that on ours.
        server_settings={
            "jit": "off",
            "plan_cache_mode": plan_cache_mode,
            "application_name": application_name,
        },
        command_timeout=settings.postgres_command_timeout,
        # Stale connections after a server restart are dropped instead of reused.
        max_inactive_connection_lifetime=60,
        reset=keep_session,
    )
    await pool  # with min_size 0 (the default) no connection is made yet
    stack.push_async_callback(pool.close)
    return pool


def _probe(settings: Settings, stack: AsyncExitStack, pools: list[asyncpg.Pool]) -> Dependency:
    probe = PostgresProbe(settings, pools)
    stack.push_async_callback(probe.close)
    return Dependency("postgres", probe.check)


def _redis_pool(settings: Settings, max_connections: int) -> aioredis.BlockingConnectionPool:
    return aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=max_connections,
        timeout=1.0,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), retries=1),
        health_check_interval=15,
    )


async def open_redis(
    settings: Settings, stack: AsyncExitStack, *, required: bool
) -> tuple[aioredis.Redis, Dependency]:
    """A Redis client that waits for a free connection instead of failing under load and
    reconnects after a restart. Its health check has a connection of its own, so a pool
    saturated by requests is not reported as Redis being down."""
    pool = _redis_pool(settings, settings.redis_max_connections)
    client = aioredis.Redis(connection_pool=pool)
    stack.push_async_callback(client.aclose)
    stack.push_async_callback(pool.disconnect)
    probe_pool = _redis_pool(settings, 1)
    probe = aioredis.Redis(connection_pool=probe_pool)
    stack.push_async_callback(probe.aclose)
    stack.push_async_callback(probe_pool.disconnect)

    async def check() -> None:
        await probe.ping()

    return client, Dependency("redis", check, required=required)


def _aws_config() -> AioConfig:
    return AioConfig(
        max_pool_connections=50,
        connect_timeout=2,
        read_timeout=10,
        retries={"max_attempts": 3, "mode": "standard"},
    )


def aws_session(settings: Settings) -> aioboto3.Session:
    return aioboto3.Session(
        aws_access_key_id=settings.aws_access_key_id,
        aws_secret_access_key=settings.aws_secret_access_key,
        region_name=settings.aws_region,
    )


async def open_aws_client(
    session: aioboto3.Session, stack: AsyncExitStack, service_name: str, settings: Settings
) -> Any:
    """One client per AWS service for the process lifetime (a client per call costs
    ~200 ms). The endpoint is AWS_ENDPOINT_URL when set (the local emulator)."""
    return await stack.enter_async_context(
        session.client(
            service_name,
            region_name=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            config=_aws_config(),
        )
    )


async def open_aws_resource(
    session: aioboto3.Session, stack: AsyncExitStack, service_name: str, settings: Settings
) -> Any:
    """Like open_aws_client, for boto's resource API (DynamoDB tables with native types)."""
    return await stack.enter_async_context(
        session.resource(
            service_name,
            region_name=settings.aws_region,
            endpoint_url=settings.aws_endpoint_url,
            config=_aws_config(),
        )
    )


async def open_outbox_relay(
    settings: Settings,
    stack: AsyncExitStack,
    pool: asyncpg.Pool,
    tables: OutboxTables,
    source: str,
) -> tuple[OutboxRelay, Dependency]:
    """The relay of a PostgreSQL service's outbox to the event bus (run `relay.run` as a
    background task), and the bus as an optional dependency: while it is unreachable the
    events wait in the outbox, so the service still serves."""
    events = await open_aws_client(aws_session(settings), stack, "events", settings)
    relay = OutboxRelay(
        pool,
        tables,
        EventBridgePublisher(events, settings.event_bus, source),
        RelayPolicy.from_env(),
    )

    async def event_bus_reachable() -> None:
        await events.describe_event_bus(Name=settings.event_bus)

    return relay, Dependency("eventbridge", event_bus_reachable, required=False)
