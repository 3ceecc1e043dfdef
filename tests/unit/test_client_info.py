"""Client metadata from the transport and trusted gateways, never from what a client claims."""

from __future__ import annotations

import ipaddress

import pytest

from cloudshelf.runtime.client_info import (
    MAX_USER_AGENT,
    ClientInfo,
    client_info_from,
    parse_forwarded_address,
    parse_peer,
)
from cloudshelf.runtime.config import Settings, parse_cidrs

GATEWAYS = parse_cidrs("test", "10.0.0.0/8, fd00::/8")
NONE_TRUSTED: tuple[ipaddress.IPv4Network, ...] = ()


def ip_of(peer: str, *headers: tuple[str, str], trusted: object = GATEWAYS) -> str | None:
    return client_info_from(peer, headers, trusted).ip  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("peer", "address"),
    [
        ("ipv4:203.0.113.9:41234", "203.0.113.9"),
        ("ipv6:[2001:db8::7]:41234", "2001:db8::7"),
        ("ipv6:%5B2001:db8::7%5D:41234", "2001:db8::7"),  # the percent-encoded form
        ("ipv6:[::ffff:203.0.113.9]:41234", "203.0.113.9"),  # IPv4 on a dual-stack socket
        ("ipv6:[fe80::1%25eth0]:41234", "fe80::1%eth0"),
        ("unix:/run/cloudshelf.sock", None),
        ("unix-abstract:cloudshelf", None),
        ("", None),
        ("ipv4:not-an-address:1", None),
        ("ipv6:[2001:db8::7", None),
    ],
)
def test_the_transport_peer_is_parsed(peer: str, address: str | None) -> None:
    parsed = parse_peer(peer)
    assert (None if parsed is None else str(parsed)) == address


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("203.0.113.9", "203.0.113.9"),
        (" 203.0.113.9 ", "203.0.113.9"),
        ("203.0.113.9:443", "203.0.113.9"),
        ("2001:db8::1", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("", None),
        ("unknown", None),
        ("example.com", None),
        ("203.0.113.9:https", None),
        ("[2001:db8::1]junk", None),
        ("[2001:db8::1", None),
        ("999.1.1.1", None),
        ("203.0.113.9, 10.0.0.1", None),  # one entry at a time
    ],
)
def test_forwarded_entries_are_parsed_or_refused(value: str, address: str | None) -> None:
    parsed = parse_forwarded_address(value)
    assert (None if parsed is None else str(parsed)) == address


def test_without_trusted_proxies_only_the_transport_counts() -> None:
    spoofed = (
        ("x-forwarded-for", "198.51.100.1"),
        ("x-real-ip", "198.51.100.2"),
        ("grpcgateway-user-agent", "spoofed agent"),
        ("grpcgateway-referer", "https://spoofed.example/"),
        ("user-agent", "grpc-python/1.85"),
        ("referer", "https://shop.example/cart"),
    )
    info = client_info_from("ipv4:10.1.2.3:5000", spoofed, NONE_TRUSTED)
    assert (info.ip, info.user_agent, info.referrer) == (
        "10.1.2.3",
        "grpc-python/1.85",
        "https://shop.example/cart",
    )


def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    assert ip_of("ipv4:203.0.113.9:5000", ("x-forwarded-for", "198.51.100.1")) == "203.0.113.9"
    assert ip_of("ipv4:203.0.113.9:5000", ("x-real-ip", "198.51.100.1")) == "203.0.113.9"
    assert ip_of("ipv6:[2001:db8::9]:5000", ("x-forwarded-for", "10.0.0.1")) == "2001:db8::9"


def test_a_trusted_chain_resolves_to_the_right_most_untrusted_address() -> None:
    # The client wrote "198.51.100.1" itself; the edge gateway appended what it saw.
    chain = ("x-forwarded-for", "198.51.100.1, 203.0.113.50, 10.0.0.5")
    assert ip_of("ipv4:10.0.0.7:5000", chain) == "203.0.113.50"
    # The header split over several entries reads as one list, in order.
    split = (("x-forwarded-for", "198.51.100.1"), ("x-forwarded-for", "203.0.113.50,10.0.0.5"))
    assert ip_of("ipv4:10.0.0.7:5000", *split) == "203.0.113.50"
    # IPv6 gateways and clients, with brackets and ports.
    assert ip_of("ipv6:[fd00::2]:5000", ("x-forwarded-for", "[2001:db8::5]:443, fd00::1")) == (
        "2001:db8::5"
    )


def test_an_all_trusted_chain_resolves_to_its_farthest_hop() -> None:
    assert ip_of("ipv4:10.0.0.7:5000", ("x-forwarded-for", "10.9.9.9, 10.0.0.5")) == "10.9.9.9"


def test_a_malformed_entry_stops_the_walk_at_the_last_trusted_hop() -> None:
    # Nothing left of garbage is vouched for, not even a valid-looking address.
    assert ip_of("ipv4:10.0.0.7:5000", ("x-forwarded-for", "198.51.100.1, junk")) == "10.0.0.7"
    assert (
        ip_of("ipv4:10.0.0.7:5000", ("x-forwarded-for", "198.51.100.1, junk, 10.0.0.5"))
        == "10.0.0.5"
    )
    assert ip_of("ipv4:10.0.0.7:5000", ("x-forwarded-for", "")) == "10.0.0.7"


def test_x_real_ip_counts_only_from_a_trusted_gateway_without_forwarded_for() -> None:
    assert ip_of("ipv4:10.0.0.7:5000", ("x-real-ip", "203.0.113.50")) == "203.0.113.50"
    assert ip_of("ipv4:10.0.0.7:5000", ("x-real-ip", "nonsense")) == "10.0.0.7"
    both = (("x-forwarded-for", "203.0.113.50"), ("x-real-ip", "198.51.100.1"))
    assert ip_of("ipv4:10.0.0.7:5000", *both) == "203.0.113.50"


def test_gateway_headers_name_the_browser_only_behind_a_trusted_gateway() -> None:
    headers = (
        ("user-agent", "grpc-go/1.70"),
        ("grpcgateway-user-agent", "Mozilla/5.0 (X11; Linux x86_64)"),
        ("grpcgateway-referer", "https://shop.example/books/42"),
    )
    via_gateway = client_info_from("ipv4:10.0.0.7:5000", headers, GATEWAYS)
    assert via_gateway.user_agent == "Mozilla/5.0 (X11; Linux x86_64)"
    assert via_gateway.referrer == "https://shop.example/books/42"
    direct = client_info_from("ipv4:203.0.113.9:5000", headers, GATEWAYS)
    assert direct.user_agent == "grpc-go/1.70"
    assert direct.referrer is None


def test_malformed_agents_and_referrers_are_cleaned_and_bounded() -> None:
    headers = (
        ("user-agent", "x" * 5000),
        ("referer", "\x00\x1b[31m https://shop.example/\x7f "),
        ("x-forwarded-for", b"\x01\x02"),  # a binary value is never an address
    )
    info = client_info_from("ipv4:10.0.0.7:5000", headers, GATEWAYS)  # type: ignore[arg-type]
    assert info.user_agent == "x" * MAX_USER_AGENT
    assert info.referrer == "[31m https://shop.example/"
    assert info.ip == "10.0.0.7"
    blank = client_info_from("ipv4:10.0.0.7:5000", (("user-agent", " \t "),), GATEWAYS)
    assert blank.user_agent is None and blank.referrer is None


def test_a_unix_socket_peer_has_no_address() -> None:
    headers = (("x-forwarded-for", "198.51.100.1"),)
    assert client_info_from("unix:/tmp/s", headers, GATEWAYS).ip is None


def test_the_repr_hides_confidential_values() -> None:
    info = ClientInfo("203.0.113.9", "agent", "https://shop.example/")
    for shown in (repr(info), str(info), f"{info}"):
        assert "203.0.113.9" not in shown and "agent" not in shown


def test_trusted_proxies_come_from_the_environment() -> None:
    settings = Settings.from_env(
        "cart", {"CLOUDSHELF_TRUSTED_PROXY_CIDRS": "10.0.0.0/8, 192.168.1.7 ,fd00::/8"}
    )
    assert [str(n) for n in settings.trusted_proxy_cidrs] == [
        "10.0.0.0/8",
        "192.168.1.7/32",
        "fd00::/8",
    ]
    assert Settings.from_env("cart", {}).trusted_proxy_cidrs == ()
    with pytest.raises(ValueError, match="CLOUDSHELF_TRUSTED_PROXY_CIDRS: 'ten' is not a CIDR"):
        Settings.from_env("cart", {"CLOUDSHELF_TRUSTED_PROXY_CIDRS": "10.0.0.0/8,ten"})
