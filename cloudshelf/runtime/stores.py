"""Connections to the backing stores, opened once per process and closed at shutdown.

Each opener registers its clean-up on the service's exit stack and returns a health check
for the runtime's dependency monitor.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import aioboto3
import asyncpg
import redis.asyncio as aioredis
from aiobotocore.config import AioConfig
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.health import Dependency


async def init_postgres_connection(conn: asyncpg.Connection) -> None:
    # jsonb/json come back as Python objects, not str (asyncpg#221).
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def open_postgres(
    settings: Settings, stack: AsyncExitStack
) -> tuple[asyncpg.Pool, Dependency]:
    """A connection pool that tolerates PostgreSQL being down at start: connections are made
    on demand, and the health check reports the outage until it is back."""
    pool = asyncpg.create_pool(
        settings.postgres_dsn,
        min_size=0,
        max_size=10,
        init=init_postgres_connection,
        # Full-text queries need plans that see the actual search terms (generic plans
        # after five executions are catastrophically slow for rare words). JIT compiles for
        # 60-80 ms on every large query and saves less than that on ours.
        server_settings={
            "jit": "off",
            "plan_cache_mode": "force_custom_plan",
            "application_name": settings.service,
        },
        command_timeout=30,
        # Stale connections after a server restart are dropped instead of reused.
        max_inactive_connection_lifetime=60,
    )
    await pool  # min_size=0: no connection is made yet
    stack.push_async_callback(pool.close)

    async def check() -> None:
        try:
            await pool.fetchval("SELECT 1")
        except (
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.ConnectionDoesNotExistError,
            OSError,
        ):
            # A restarted server leaves dead connections in the pool (asyncpg#385).
            pool.expire_connections()
            raise

    return pool, Dependency("postgres", check)


async def open_redis(
    settings: Settings, stack: AsyncExitStack, *, required: bool
) -> tuple[aioredis.Redis, Dependency]:
    """A Redis client that waits for a free connection instead of failing under load and
    reconnects after a restart."""
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=32,
        timeout=1.0,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.01), retries=1),
        health_check_interval=15,
    )
    client = aioredis.Redis(connection_pool=pool)
    stack.push_async_callback(client.aclose)
    stack.push_async_callback(pool.disconnect)

    async def check() -> None:
        await client.ping()

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
