"""The pure parts of the runtime's auth: the JWKS key cache and its refetch gate, the
service's own token and its refresh, the client-credentials request, the bearer header,
and the verifier's claim checks and cache. Keys and tokens are made here; the JWKS and
token endpoints are real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudshelf.runtime import auth
from cloudshelf.runtime.auth import Role, ServiceCredentials, SigningKeys, TokenVerifier
from cloudshelf.runtime.config import AuthSettings
from cloudshelf.runtime.errors import Unauthenticated, Unavailable

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Test"
CLIENT = "test-client"


def jwks(*kids: str) -> bytes:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key()))
    return json.dumps({"keys": [{**public, "kid": kid, "alg": "RS256"} for kid in kids]}).encode()


@dataclass
class Endpoint:
    """A real HTTP server answering every request with `body`; records the requests."""

    body: bytes = b"{}"
    status: int = 200
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    state = Endpoint()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            state.requests.append((dict(self.headers), self.rfile.read(length)))
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(state.body)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    state.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, daemon=True)
    thread.start()
    yield state
    state.server.shutdown()
    state.server.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the key cache ----------------------------------------------------------------------


async def test_an_unknown_kid_refetches_at_most_once_per_interval(endpoint: Endpoint) -> None:
    endpoint.body = jwks("k1")
    clock = Clock()
    keys = SigningKeys(endpoint.url, 60.0, clock=clock)
    assert await keys.get("k1") is not None
    assert len(endpoint.requests) == 1
    for i in range(100):  # a flood of unknown kids: no fetch within the interval
        assert await keys.get(f"forged-{i}") is None
    assert await keys.get("k1") is not None
    assert len(endpoint.requests) == 1

    endpoint.body = jwks("k1", "k2")  # the issuer rotates in a new key
    clock.now += 59
    assert await keys.get("k2") is None
    clock.now += 1
    assert await keys.get("k2") is not None
    assert len(endpoint.requests) == 2 and keys.fetches == 2


async def test_concurrent_misses_share_one_fetch(endpoint: Endpoint) -> None:
    endpoint.body = jwks("k1")
    keys = SigningKeys(endpoint.url, 60.0)
    found = await asyncio.gather(*(keys.get("k1") for _ in range(50)))
    assert all(key is not None for key in found)
    assert len(endpoint.requests) == 1


async def test_an_unreachable_jwks_is_unavailable_and_retried_later(endpoint: Endpoint) -> None:
    endpoint.status, endpoint.body = 503, b"down"
    clock = Clock()
    keys = SigningKeys(endpoint.url, 60.0, retry_after_failure=5.0, clock=clock)
    for _ in range(3):
        with pytest.raises(Unavailable):
            await keys.get("k1")
    assert len(endpoint.requests) == 1
    endpoint.status, endpoint.body = 200, jwks("k1")
    clock.now += 5
    assert await keys.get("k1") is not None
    assert len(endpoint.requests) == 2


# --- the verifier -------------------------------------------------------------------------


def settings(**overrides: Any) -> AuthSettings:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "jwks_url": "unused",
        "client_ids": frozenset({CLIENT}),
    }
    values.update(overrides)
    return AuthSettings(**values)


def token(**claims: Any) -> str:
    now = int(time.time())
    payload = {
        "iss": ISSUER,
        "sub": "user-1",
        "client_id": CLIENT,
        "token_use": "access",
        "iat": now,
        "exp": now + 600,
        **claims,
    }
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None}, KEY, "RS256", headers={"kid": "k1"}
    )


@pytest.fixture
def verifier(endpoint: Endpoint) -> TokenVerifier:
    endpoint.body = jwks("k1")
    return TokenVerifier(settings(), SigningKeys(endpoint.url))


async def test_roles_come_from_groups_and_scopes(verifier: TokenVerifier) -> None:
    shopper = await verifier.verify(token())
    assert shopper.roles == {Role.SHOPPER} and shopper.subject == "user-1"
    admin = await verifier.verify(token(**{"cognito:groups": ["admins"]}))
    assert admin.roles == {Role.SHOPPER, Role.ADMIN}
    service = await verifier.verify(token(**{"cognito:groups": ["services"]}))
    assert service.roles == {Role.SERVICE}
    machine = await verifier.verify(token(scope="cloudshelf/service other/scope"))
    assert machine.roles == {Role.SERVICE}


async def test_a_verified_token_is_remembered_until_it_expires(
    verifier: TokenVerifier, endpoint: Endpoint
) -> None:
    short = token(exp=int(time.time()) + 2)
    first = await verifier.verify(short)
    assert await verifier.verify(short) is first  # from the cache
    await asyncio.sleep(2.1)
    # Past exp the token is checked again, and refused once the leeway is over too.
    strict = TokenVerifier(settings(leeway=0), verifier.keys)
    with pytest.raises(Unauthenticated) as refused:
        await strict.verify(short)
    assert refused.value.reason == auth.TOKEN_EXPIRED


async def test_id_tokens_are_checked_by_audience_when_accepted(verifier: TokenVerifier) -> None:
    id_token = token(token_use="id", client_id=None, aud=CLIENT)
    with pytest.raises(Unauthenticated) as refused:
        await verifier.verify(id_token)
    assert refused.value.reason == auth.TOKEN_USE_INVALID
    accepting = TokenVerifier(settings(token_uses=frozenset({"access", "id"})), verifier.keys)
    assert (await accepting.verify(id_token)).client_id == CLIENT
    with pytest.raises(Unauthenticated) as refused:
        await accepting.verify(token(token_use="id", client_id=None, aud="other"))
    assert refused.value.reason == auth.TOKEN_CLIENT_INVALID


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"token_use": ["access"]}, auth.TOKEN_USE_INVALID),
        ({"client_id": [CLIENT]}, auth.TOKEN_CLIENT_INVALID),
        ({"client_id": {"id": CLIENT}}, auth.TOKEN_CLIENT_INVALID),
        ({"cognito:groups": "admins"}, auth.TOKEN_MALFORMED),
        ({"sub": ""}, auth.TOKEN_MALFORMED),
        ({"sub": 42}, auth.TOKEN_MALFORMED),
        ({"exp": "tomorrow"}, auth.TOKEN_MALFORMED),
        ({"iss": None}, auth.TOKEN_MALFORMED),
    ],
)
async def test_odd_claims_are_refused_not_crashed_on(
    verifier: TokenVerifier, claims: dict[str, Any], reason: str
) -> None:
    with pytest.raises(Unauthenticated) as refused:
        await verifier.verify(token(**claims))
    assert refused.value.reason == reason


async def test_odd_headers_are_refused_before_any_key_lookup(
    verifier: TokenVerifier, endpoint: Endpoint
) -> None:
    unsigned = jwt.encode({"sub": "x"}, "", algorithm="none")
    not_an_object = "W10." + token().split(".", 1)[1]  # header "[]"
    int_kid = ".".join(
        base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
        for part in ({"alg": "RS256", "kid": 7}, {"sub": "x"}, "signature")
    )
    for bad, reason in (
        (unsigned, auth.TOKEN_ALGORITHM_INVALID),
        (not_an_object, auth.TOKEN_MALFORMED),
        (int_kid, auth.TOKEN_MALFORMED),
    ):
        with pytest.raises(Unauthenticated) as refused:
            await verifier.verify(bad)
        assert refused.value.reason == reason
    assert endpoint.requests == []


async def test_the_cache_is_bounded(endpoint: Endpoint) -> None:
    endpoint.body = jwks("k1")
    small = TokenVerifier(settings(), SigningKeys(endpoint.url), cache_size=3)
    for i in range(10):
        await small.verify(token(sub=f"user-{i}"))
    assert len(small._verified) == 3


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        (b"Bearer abc", "abc"),
    ],
)
def test_bearer_header(header: str | bytes | None, expected: str | None) -> None:
    metadata = [("authorization", header)] if header is not None else []
    assert auth.bearer_token(metadata) == expected


@pytest.mark.parametrize("header", ["abc", "Basic abc", "Bearer ", "Bearer a b"])
def test_malformed_bearer_headers_are_refused(header: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        auth.bearer_token([("authorization", header)])
    assert refused.value.reason == auth.TOKEN_MALFORMED


def test_problems_name_what_is_missing() -> None:
    assert AuthSettings().problems()[0].startswith("CLOUDSHELF_AUTH_ISSUER is not set")
    assert AuthSettings(disabled=True).problems() == []
    assert settings().problems() == []
    loaded = AuthSettings.from_env(
        {"CLOUDSHELF_AUTH_ISSUER": ISSUER + "/", "CLOUDSHELF_AUTH_CLIENT_IDS": "a, b"}
    )
    assert loaded.jwks_url == f"{ISSUER}/.well-known/jwks.json"
    assert loaded.client_ids == {"a", "b"} and loaded.service_client_id == "a"


# --- the service's own token -----------------------------------------------------------------


async def test_the_service_token_is_fetched_once_and_refreshed_before_it_expires() -> None:
    clock = Clock()
    issued: list[str] = []

    async def source() -> tuple[str, float]:
        issued.append(f"token-{len(issued)}")
        return issued[-1], 3600.0

    credentials = ServiceCredentials(source, refresh_margin=300, clock=clock)
    assert await credentials.token() == "token-0"
    clock.now += 3299
    assert await credentials.token() == "token-0"
    clock.now += 2  # less than the margin left: a new one, before the old one expires
    assert await credentials.token() == "token-1"
    assert await asyncio.gather(*(credentials.token() for _ in range(20))) == ["token-1"] * 20
    assert credentials.fetches == 2


async def test_client_credentials_grant(endpoint: Endpoint) -> None:
    endpoint.body = json.dumps({"access_token": "machine-token", "expires_in": 3600}).encode()
    source = auth.client_credentials_source(
        AuthSettings(
            token_url=endpoint.url,
            service_client_id="svc",
            service_client_secret="s3cret",
            service_scope="cloudshelf/service",
        )
    )
    assert await source() == ("machine-token", 3600.0)
    headers, body = endpoint.requests[0]
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"svc:s3cret").decode()
    assert urllib.parse.parse_qs(body.decode()) == {
        "grant_type": ["client_credentials"],
        "scope": ["cloudshelf/service"],
    }
