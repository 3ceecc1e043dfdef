"""Outgoing calls inherit what is left of the incoming call's deadline."""

from __future__ import annotations

import time
from typing import Any

import grpc

from cloudshelf.runtime import rpc


async def _outgoing_timeout(own_timeout: float | None, incoming_left: float | None) -> float:
    seen: list[grpc.aio.ClientCallDetails] = []

    async def continuation(details: grpc.aio.ClientCallDetails, request: Any) -> None:
        seen.append(details)

    token = rpc._incoming_deadline.set(
        None if incoming_left is None else time.monotonic() + incoming_left
    )
    try:
        details = grpc.aio.ClientCallDetails("/x.v1.S/M", own_timeout, None, None, None)
        await rpc.DeadlinePropagation(default_timeout=5.0).intercept_unary_unary(
            continuation, details, object()
        )
    finally:
        rpc._incoming_deadline.reset(token)
    timeout = seen[0].timeout
    assert timeout is not None
    return timeout


async def test_default_timeout_when_nothing_is_set() -> None:
    assert await _outgoing_timeout(None, None) == 5.0


async def test_incoming_deadline_caps_the_outgoing_call() -> None:
    assert 0.9 < await _outgoing_timeout(None, 1.0) <= 1.0
    assert 0.9 < await _outgoing_timeout(3.0, 1.0) <= 1.0


async def test_own_shorter_timeout_wins() -> None:
    assert await _outgoing_timeout(0.5, 10.0) == 0.5


async def test_expired_deadline_gives_zero_not_negative() -> None:
    assert await _outgoing_timeout(None, -1.0) == 0.0
