"""client_info through a real grpc.aio server: the transport's peer as grpc reports it
(IPv4 and IPv6), the client's own user agent, and forwarded headers only from a trusted hop."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import grpc

from cloudshelf.runtime.client_info import client_info
from cloudshelf.runtime.config import IPNetwork, parse_cidrs
from cloudshelf.runtime.rpc import ServicerContext

Seen = dict[str, str | None]
Caller = Callable[..., Awaitable[Seen]]
METHOD = "/cloudshelf.test.ClientInfoEcho/Who"
USER_AGENT = "cloudshelf-test/1.0"
SPOOFED = (
    ("x-forwarded-for", "198.51.100.1, 203.0.113.50"),
    ("x-real-ip", "198.51.100.2"),
    ("referer", "https://shop.example/books/42"),
)


@asynccontextmanager
async def echo_server(host: str, trusted: Sequence[IPNetwork] | None) -> AsyncIterator[Caller]:
    """A server whose one method answers what client_info saw, as JSON; yields a caller."""

    async def who(request: bytes, context: ServicerContext) -> bytes:
        info = client_info(context, trusted)
        seen = {"ip": info.ip, "user_agent": info.user_agent, "referrer": info.referrer}
        return json.dumps(seen).encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "cloudshelf.test.ClientInfoEcho",
                {"Who": grpc.unary_unary_rpc_method_handler(who)},
            ),
        )
    )
    port = server.add_insecure_port(f"{host}:0")
    assert port, f"cannot listen on {host}"
    await server.start()
    channel = grpc.aio.insecure_channel(
        f"{host}:{port}", options=[("grpc.primary_user_agent", USER_AGENT)]
    )

    # No serializers: the request and response are raw bytes.
    who_method: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(METHOD)

    async def call(*metadata: tuple[str, str]) -> Seen:
        answer = await who_method(b"", metadata=metadata, timeout=5)
        seen: Seen = json.loads(answer)
        return seen

    try:
        yield call
    finally:
        await channel.close()
        await server.stop(None)


async def test_the_transport_peer_over_ipv4_wins_over_spoofed_headers() -> None:
    # trusted=None: CLOUDSHELF_TRUSTED_PROXY_CIDRS, unset here, so no hop is trusted.
    async with echo_server("127.0.0.1", None) as call:
        seen = await call(*SPOOFED)
    assert seen["ip"] == "127.0.0.1"
    assert (seen["user_agent"] or "").startswith(USER_AGENT)
    assert seen["referrer"] == "https://shop.example/books/42"


async def test_the_transport_peer_over_ipv6() -> None:
    async with echo_server("[::1]", ()) as call:
        seen = await call(*SPOOFED)
    assert seen["ip"] == "::1"


async def test_a_trusted_hop_forwards_the_client_address() -> None:
    async with echo_server("127.0.0.1", parse_cidrs("test", "127.0.0.0/8")) as call:
        assert (await call(*SPOOFED))["ip"] == "203.0.113.50"
        assert (await call(("x-real-ip", "203.0.113.51")))["ip"] == "203.0.113.51"
        assert (await call())["ip"] == "127.0.0.1"
