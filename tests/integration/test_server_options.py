"""Server options that matter in a cluster: connections that age out (so clients
rebalance across replicas added after they connected)."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloudshelf.devstack.stack import Stack
from cloudshelf.runtime.server import server_options
from tests.conftest import ServiceSpawner, wait_for_health


def test_options_only_when_an_age_is_set() -> None:
    assert server_options(0, 10) == []
    assert server_options(300, 10) == [
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", 10_000),
    ]


async def _left_ready_within(address: str, seconds: float) -> bool:
    """Connects, then tells whether the connection stopped being READY (GOAWAY)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
        assert channel.get_state() == grpc.ChannelConnectivity.READY
        try:
            await asyncio.wait_for(
                channel.wait_for_state_change(grpc.ChannelConnectivity.READY), seconds
            )
        except TimeoutError:
            return False
        return True


async def test_a_connection_older_than_the_max_age_is_closed(
    spawn_service: ServiceSpawner, stack: Stack
) -> None:
    _, address = spawn_service("cart", CLOUDSHELF_MAX_CONNECTION_AGE_SECONDS="1")
    await asyncio.to_thread(wait_for_health, address, "SERVING")
    assert await _left_ready_within(address, 5)
    # The shared stack sets no age: its connections stay.
    assert not await _left_ready_within(stack.address("cart"), 3)
