"""Who the client is on the network: its IP address, user agent and referrer, as the
transport and trusted gateways report them. Client metadata is not identity: nothing here
says who is calling (that is the verified token's `sub`), and nothing here comes from a
request body, which the client writes freely.

Confidential (the seed's data classification): record it only where the data map says
so, never log it, never put it in span attributes or error messages. `ClientInfo`'s repr
hides its values so that an accidental `log.info("%s", info)` leaks nothing.

The address is the transport's peer (`context.peer()`), unless that peer is a trusted
gateway (CLOUDSHELF_TRUSTED_PROXY_CIDRS): then `x-forwarded-for` is read from the right,
skipping the trusted hops, and the first untrusted address is the client (the right-most
untrusted one: a client can write anything to the left of what the gateways appended, so
the left-most value is never believed); without `x-forwarded-for`, a valid `x-real-ip`.
From an untrusted peer every forwarded header is ignored, so a client cannot pick its own
address. The user agent and referrer are the client's own `user-agent` and `referer`
headers; behind a trusted grpc-gateway, its `grpcgateway-user-agent` and
`grpcgateway-referer` (the browser's, not the gateway's).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import unquote

from cloudshelf.runtime.config import IPNetwork, trusted_proxy_cidrs
from cloudshelf.runtime.rpc import ServicerContext

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# Longest values kept (a user agent is rarely over 300 characters; a referrer is a URL).
MAX_USER_AGENT = 512
MAX_REFERRER = 2048


@dataclass(frozen=True, repr=False)
class ClientInfo:
    """Confidential client metadata of one call; None where it is unknown."""

    ip: str | None
    user_agent: str | None
    referrer: str | None

    def __repr__(self) -> str:
        return "ClientInfo(<confidential>)"


def parse_peer(peer: str) -> IPAddress | None:
    """The address of a grpc peer string ("ipv4:10.0.0.7:41234", "ipv6:[::1]:41234", its
    percent-encoded form "ipv6:%5B::1%5D:41234"); None for unix sockets and anything else."""
    scheme, _, rest = unquote(peer).partition(":")
    if scheme == "ipv4":
        host = rest.rpartition(":")[0] or rest
    elif scheme == "ipv6" and rest.startswith("[") and "]" in rest:
        host = rest[1 : rest.find("]")]
    else:
        return None
    return _address(host)


def parse_forwarded_address(value: str) -> IPAddress | None:
    """One x-forwarded-for or x-real-ip entry: an address, with or without a port
    ("203.0.113.9", "203.0.113.9:443", "2001:db8::1", "[2001:db8::1]:443"); None when it
    is not one (a name, "unknown", garbage)."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not _is_port(value[end + 1 :])):
            return None
        return _address(value[1:end])
    if value.count(":") == 1:  # IPv4 with a port; a bare IPv6 address has at least two
        host, _, port = value.partition(":")
        return _address(host) if port.isdigit() else None
    return _address(value)


def _is_port(suffix: str) -> bool:
    return suffix.startswith(":") and suffix[1:].isdigit()


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack listener reports IPv4 clients as ::ffff:a.b.c.d: compare them as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: IPAddress, trusted: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in trusted)


def resolve_client_address(
    peer: IPAddress | None,
    forwarded_for: Sequence[str],
    real_ip: str | None,
    trusted: Sequence[IPNetwork],
) -> IPAddress | None:
    """The client's address (see the module's docstring). `forwarded_for` holds every
    x-forwarded-for value in arrival order (a header may repeat)."""
    if peer is None or not _trusted(peer, trusted):
        return peer
    entries = [entry for value in forwarded_for for entry in value.split(",")]
    closest = peer
    for entry in reversed(entries):
        address = parse_forwarded_address(entry)
        if address is None:
            # Not written by a trusted gateway (they append addresses): nothing to its
            # left is vouched for; the last trusted hop is the best we know.
            return closest
        if not _trusted(address, trusted):
            return address
        closest = address
    if not entries and real_ip is not None:
        address = parse_forwarded_address(real_ip)
        if address is not None:
            return address
    return closest


def _printable(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    cleaned = "".join(c for c in value if c.isprintable()).strip()[:limit]
    return cleaned or None


def client_info_from(
    peer: str, metadata: Iterable[tuple[str, Any]], trusted: Sequence[IPNetwork]
) -> ClientInfo:
    """ClientInfo from a grpc peer string and invocation metadata (pure: the unit tests')."""
    headers: dict[str, list[str]] = {}
    for key, value in metadata:
        if isinstance(value, str):  # binary (-bin) headers are never these
            headers.setdefault(key.lower(), []).append(value)

    def first(name: str) -> str | None:
        values = headers.get(name)
        return values[0] if values else None

    transport = parse_peer(peer)
    via_gateway = transport is not None and _trusted(transport, trusted)
    address = resolve_client_address(
        transport, headers.get("x-forwarded-for", []), first("x-real-ip"), trusted
    )
    user_agent = first("user-agent")
    referrer = first("referer")
    if via_gateway:
        user_agent = first("grpcgateway-user-agent") or user_agent
        referrer = first("grpcgateway-referer") or referrer
    return ClientInfo(
        ip=None if address is None else str(address),
        user_agent=_printable(user_agent, MAX_USER_AGENT),
        referrer=_printable(referrer, MAX_REFERRER),
    )


@functools.cache
def _configured_trusted_proxies() -> tuple[IPNetwork, ...]:
    return trusted_proxy_cidrs()


def client_info(
    context: ServicerContext, trusted_proxies: Sequence[IPNetwork] | None = None
) -> ClientInfo:
    """The calling client's IP address, user agent and referrer. Confidential: never log it.

    `context` is the handler's grpc.aio.ServicerContext; `trusted_proxies` defaults to
    CLOUDSHELF_TRUSTED_PROXY_CIDRS (Settings.trusted_proxy_cidrs), by default none: then
    only the transport is believed.
    """
    trusted = _configured_trusted_proxies() if trusted_proxies is None else trusted_proxies
    return client_info_from(context.peer(), context.invocation_metadata() or (), trusted)
