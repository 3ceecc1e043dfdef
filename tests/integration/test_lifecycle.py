"""Health follows real dependencies; SIGTERM drains in-flight calls."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import grpc
import pytest

from cloudshelf.devstack.components import Postgres, Redis, free_port
from cloudshelf.storefront.v1 import storefront_pb2, storefront_pb2_grpc
from tests.conftest import ServiceSpawner, User, authorized_channel, wait_for_health


def test_cache_outage_degrades_the_catalog_and_recovery_restores_it(
    spawn_service: ServiceSpawner, tmp_path: Path
) -> None:
    redis = Redis(tmp_path, free_port())
    redis.start()
    try:
        _, address = spawn_service("catalog", CLOUDSHELF_REDIS_URL=redis.url)
        wait_for_health(address, "SERVING")
        wait_for_health(address, "SERVING", "dependency/redis")

        redis.stop()
        wait_for_health(address, "NOT_SERVING", "dependency/redis")
        # Degraded, not down: the catalog still answers from PostgreSQL.
        wait_for_health(address, "SERVING")

        redis.start()
        wait_for_health(address, "SERVING", "dependency/redis")
    finally:
        redis.stop()


def test_database_outage_takes_the_service_out_and_recovery_brings_it_back(
    spawn_service: ServiceSpawner, scratch_dir: Path
) -> None:
    postgres = Postgres(scratch_dir, free_port(), durable=False)
    postgres.start()
    try:
        _, address = spawn_service("governance", CLOUDSHELF_POSTGRES_DSN=postgres.dsn("postgres"))
        wait_for_health(address, "SERVING")

        postgres.stop()
        wait_for_health(address, "NOT_SERVING")
        wait_for_health(address, "NOT_SERVING", "cloudshelf.governance.v1.GovernanceService")
        wait_for_health(address, "SERVING", "liveness")  # down, but not to be restarted

        postgres.start()
        wait_for_health(address, "SERVING")
    finally:
        postgres.stop()


async def test_sigterm_lets_the_in_flight_call_finish_and_refuses_new_ones(
    spawn_service: ServiceSpawner, shopper: User
) -> None:
    cart, cart_address = spawn_service("cart")
    storefront, storefront_address = spawn_service(
        "storefront", CLOUDSHELF_CART_ADDR=cart_address, CLOUDSHELF_SHUTDOWN_GRACE_SECONDS="20"
    )
    wait_for_health(storefront_address, "SERVING")

    request = storefront_pb2.GetCartViewRequest()
    async with authorized_channel(storefront_address, shopper.token) as channel:
        stub = storefront_pb2_grpc.StorefrontServiceStub(channel)
        # Freeze the cart service so the storefront's call is held in flight.
        cart.signal(signal.SIGSTOP)
        in_flight = asyncio.ensure_future(stub.GetCartView(request, timeout=30))
        await asyncio.sleep(1.0)
        assert not in_flight.done()

        storefront.signal(signal.SIGTERM)
        await asyncio.to_thread(wait_for_health, storefront_address, "UNREACHABLE", "", 10)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GetCartView(request, timeout=2)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        cart.signal(signal.SIGCONT)
        started = time.monotonic()
        response = await in_flight
        assert response.cart_view.owner.user_id == shopper.subject
        assert time.monotonic() - started < 10

    assert await asyncio.to_thread(storefront.wait_exit, 20) == 0
