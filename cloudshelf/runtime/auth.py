"""Who is calling and what they may do, for every service: one server interceptor that
verifies the caller's token and applies the service's per-RPC policy, and one client
interceptor that carries the caller's identity (or the service's own) to peers.

Authentication: a bearer JWT in the `authorization` metadata, issued by a Cognito user
pool (moto's emulator locally). It is verified with PyJWT: RS256 only, the signature
against the pool's JWKS (keys cached by `kid`; an unknown `kid` refetches the set at most
once per `jwks_refetch_interval`, so a flood of forged tokens cannot turn into a flood of
fetches), `iss`, `exp`/`nbf`/`iat` with a small leeway, `token_use`, and the app client
(`client_id` of access tokens, `aud` of id tokens) against the configured ones. A verified
token is remembered until it expires, so a caller's next calls cost a dictionary lookup.

Authorization: each service declares, beside its handlers, which roles may call each RPC
(`Policy`: RPC name -> roles). Roles: `public` (anyone, no token needed), `shopper` (any
signed-in end user), `admin` (a user in the admins group), `service` (another service
acting as itself). An RPC missing from its table refuses every call. Health and reflection
are open and never look at tokens.

Errors: UNAUTHENTICATED (no token where one is needed, or one that fails a check; the
message and ErrorInfo reason say which check), PERMISSION_DENIED (a valid caller without
the role). A token is checked whenever one is sent, also on public RPCs: a bad credential
is refused rather than silently ignored.

Across hops: a handler's calls to peers (through `rpc.peer_channel`) carry the incoming
`authorization` unchanged, so the peer checks the same caller again; work done outside any
call (a background job), or inside `acting_as_service()`, carries the service's own token.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import json
import logging
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn

import grpc
import jwt
from google.protobuf import descriptor_pool

from cloudshelf.runtime.config import AuthSettings, Settings
from cloudshelf.runtime.errors import (
    ErrorStatus,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    status_for,
)
from cloudshelf.runtime.idempotency import current_principal
from cloudshelf.runtime.stores import aws_session

log = logging.getLogger("cloudshelf.auth")

AUTHORIZATION = "authorization"
# An anonymous cart session's credential (services/cart/owners.py checks it); forwarded to
# peers like `authorization`, so that the storefront can serve an anonymous cart.
SESSION_CREDENTIAL = "x-session-credential"
ALGORITHM = "RS256"
# Services that answer without any check: probes, and clients discovering the API.
OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

# ErrorInfo reasons of UNAUTHENTICATED and PERMISSION_DENIED answers.
TOKEN_MISSING = "TOKEN_MISSING"
TOKEN_MALFORMED = "TOKEN_MALFORMED"
TOKEN_ALGORITHM_INVALID = "TOKEN_ALGORITHM_INVALID"
TOKEN_SIGNATURE_INVALID = "TOKEN_SIGNATURE_INVALID"
TOKEN_EXPIRED = "TOKEN_EXPIRED"
TOKEN_NOT_YET_VALID = "TOKEN_NOT_YET_VALID"
TOKEN_ISSUER_INVALID = "TOKEN_ISSUER_INVALID"
TOKEN_CLIENT_INVALID = "TOKEN_CLIENT_INVALID"
TOKEN_USE_INVALID = "TOKEN_USE_INVALID"
SIGNING_KEYS_UNAVAILABLE = "SIGNING_KEYS_UNAVAILABLE"
ROLE_REQUIRED = "ROLE_REQUIRED"
NO_POLICY = "NO_POLICY"
NOT_OWNER = "NOT_OWNER"


class Role(StrEnum):
    PUBLIC = "public"
    SHOPPER = "shopper"
    ADMIN = "admin"
    SERVICE = "service"


Roles = frozenset[Role]
# Who may call each RPC of one service, by the RPC's name in the proto.
Policy = Mapping[str, Roles]

PUBLIC: Roles = frozenset({Role.PUBLIC})
SHOPPER: Roles = frozenset({Role.SHOPPER})
ADMIN: Roles = frozenset({Role.ADMIN})
SERVICE: Roles = frozenset({Role.SERVICE})
ADMIN_OR_SERVICE: Roles = frozenset({Role.ADMIN, Role.SERVICE})
SHOPPER_OR_ADMIN: Roles = frozenset({Role.SHOPPER, Role.ADMIN})


@dataclass(frozen=True)
class Principal:
    """A verified caller. `subject` (the token's `sub`) is the user id everywhere."""

    subject: str
    username: str
    groups: frozenset[str]
    roles: Roles
    client_id: str
    # Unix time after which the token is refused.
    expires_at: float

    def has(self, role: Role) -> bool:
        return role in self.roles


@dataclass(frozen=True)
class _IncomingCall:
    principal: Principal | None
    # The header as received, passed on to peers; never logged.
    authorization: str | None = field(repr=False)
    # The x-session-credential header as received (unchecked here), passed on to peers.
    session_credential: str | None = field(default=None, repr=False)


# Set by the interceptor for the duration of each call (each call runs in its own task).
_incoming: contextvars.ContextVar[_IncomingCall | None] = contextvars.ContextVar(
    "incoming_call", default=None
)
_acting_as_service: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "acting_as_service", default=False
)


def caller() -> Principal | None:
    """The verified caller of the current call; None for an anonymous one (or outside a call)."""
    call = _incoming.get()
    return call.principal if call is not None else None


def signed_in_caller() -> Principal:
    """The verified caller, or UNAUTHENTICATED when the call carries no token."""
    principal = caller()
    if principal is None:
        raise Unauthenticated(
            "this call needs a signed-in caller: send 'authorization: Bearer <access token>'",
            reason=TOKEN_MISSING,
        )
    return principal


@contextlib.contextmanager
def acting_as_service() -> Iterator[None]:
    """Peer calls made inside carry the service's own credentials (role `service`), not
    the caller's: for work the service does on its own authority (e.g. reserving stock at
    checkout), after it has checked the caller itself."""
    token = _acting_as_service.set(True)
    try:
        yield
    finally:
        _acting_as_service.reset(token)


# --- verification ----------------------------------------------------------------------


class SigningKeys:
    """The issuer's public keys by `kid`, from its JWKS URL.

    A `kid` not yet known triggers one fetch of the whole set (keys rotate by adding a new
    `kid`), but never sooner than `refetch_interval` after the previous fetch; concurrent
    calls wait for the same fetch. A failed fetch is retried after `retry_after_failure`.
    PyJWT's client does the HTTP and parsing; it blocks, so it runs in a thread, and this
    gate (not the client's own cache, whose cooldown depends on the PyJWT version) decides
    when it may run.
    """

    def __init__(
        self,
        url: str,
        refetch_interval: float = 60.0,
        *,
        retry_after_failure: float = 5.0,
        timeout: int = 5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.refetch_interval = refetch_interval
        self.retry_after_failure = retry_after_failure
        self.fetches = 0
        self._client = jwt.PyJWKClient(url, cache_keys=False, cache_jwk_set=False, timeout=timeout)
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._next_fetch_at: float | None = None
        self._last_fetch_failed = False
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> jwt.PyJWK | None:
        """The key with this id; None when the issuer does not publish it."""
        key = self._keys.get(kid)
        if key is not None:
            return key
        async with self._lock:
            key = self._keys.get(kid)
            if key is None and self._may_fetch():
                await self._fetch()
                key = self._keys.get(kid)
        if key is None and self._last_fetch_failed:
            raise Unavailable(
                "the token issuer's signing keys cannot be fetched now; retry later",
                reason=SIGNING_KEYS_UNAVAILABLE,
            )
        return key

    def _may_fetch(self) -> bool:
        return self._next_fetch_at is None or self._clock() >= self._next_fetch_at

    async def _fetch(self) -> None:
        started = self._clock()
        try:
            jwk_set = await asyncio.to_thread(self._client.get_jwk_set, True)
        except (jwt.PyJWKClientError, jwt.PyJWKSetError) as exc:
            self._next_fetch_at = started + self.retry_after_failure
            self._last_fetch_failed = True
            log.warning("cannot fetch signing keys from %s: %s", self.url, exc)
            return
        self._next_fetch_at = started + self.refetch_interval
        self._last_fetch_failed = False
        self.fetches += 1
        self._keys = {
            key.key_id: key for key in jwk_set.keys if key.key_id and key.key_type == "RSA"
        }
        log.info("fetched %d signing keys from %s", len(self._keys), self.url, extra={"jwks": True})


def _refused(problem: str, reason: str) -> Unauthenticated:
    return Unauthenticated(f"authorization: {problem}", reason=reason)


class TokenVerifier:
    """Checks bearer tokens against the settings; remembers verified ones until they expire."""

    def __init__(
        self,
        settings: AuthSettings,
        keys: SigningKeys | None = None,
        *,
        cache_size: int = 10_000,
    ) -> None:
        self.settings = settings
        self.keys = keys or SigningKeys(settings.jwks_url, settings.jwks_refetch_interval)
        self.cache_size = cache_size
        self._verified: dict[str, Principal] = {}

    async def verify(self, token: str) -> Principal:
        principal = self._verified.get(token)
        if principal is not None:
            if principal.expires_at > time.time():
                return principal
            self._verified.pop(token, None)
        principal = await self._verify(token)
        if len(self._verified) >= self.cache_size:
            # Oldest first (dicts keep insertion order): O(1), and a token still in use is
            # simply verified again.
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = principal
        return principal

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:  # DecodeError, or a header PyJWT finds invalid
            raise _refused("the bearer token is not a JWT", TOKEN_MALFORMED) from None
        algorithm = header.get("alg")
        if algorithm != ALGORITHM:
            raise _refused(
                f"the token is signed with {str(algorithm)[:20]!r}; only {ALGORITHM} is accepted",
                TOKEN_ALGORITHM_INVALID,
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _refused("the token's header names no signing key (kid)", TOKEN_MALFORMED)
        key = await self.keys.get(kid)
        if key is None:
            raise _refused(
                "the token is signed with a key the issuer does not publish",
                TOKEN_SIGNATURE_INVALID,
            )
        settings = self.settings
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[ALGORITHM],
                issuer=settings.issuer,
                leeway=settings.leeway,
                options={"require": ["exp", "iss", "sub", "token_use"], "verify_aud": False},
            )
        except jwt.InvalidSignatureError:
            raise _refused(
                "the token's signature does not verify", TOKEN_SIGNATURE_INVALID
            ) from None
        except jwt.ExpiredSignatureError:
            raise _refused("the token has expired; sign in again", TOKEN_EXPIRED) from None
        except jwt.ImmatureSignatureError:
            raise _refused("the token is not valid yet (nbf or iat)", TOKEN_NOT_YET_VALID) from None
        except jwt.InvalidIssuerError:
            raise _refused(
                "the token was issued by another issuer than this service trusts",
                TOKEN_ISSUER_INVALID,
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _refused(f"the token has no {exc.claim!r} claim", TOKEN_MALFORMED) from None
        except jwt.InvalidTokenError as exc:
            raise _refused(f"the token is invalid ({exc})"[:200], TOKEN_MALFORMED) from None
        return self._principal(claims)

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        settings = self.settings
        token_use = claims["token_use"]
        if not isinstance(token_use, str) or token_use not in settings.token_uses:
            accepted = " or ".join(sorted(settings.token_uses))
            raise _refused(
                f"a token_use {str(token_use)[:20]!r} token is not accepted here; send an "
                f"{accepted} token",
                TOKEN_USE_INVALID,
            )
        if token_use == "access":
            clients = [claims.get("client_id")]
        else:
            audience = claims.get("aud")
            clients = list(audience) if isinstance(audience, list) else [audience]
        client_id = next(
            (c for c in clients if isinstance(c, str) and c in settings.client_ids), None
        )
        if client_id is None:
            raise _refused(
                "the token was issued to an app client this service does not accept",
                TOKEN_CLIENT_INVALID,
            )
        subject = claims["sub"]
        raw_groups = claims.get("cognito:groups", [])
        if not isinstance(subject, str) or not subject or not isinstance(raw_groups, list):
            raise _refused("the token's sub or cognito:groups claim is malformed", TOKEN_MALFORMED)
        groups = frozenset(str(group) for group in raw_groups)
        scopes = str(claims.get("scope", "")).split()
        roles: set[Role] = set()
        if settings.service_group in groups or settings.service_scope in scopes:
            roles.add(Role.SERVICE)
        else:
            roles.add(Role.SHOPPER)
        if settings.admin_group in groups:
            roles.add(Role.ADMIN)
        username = claims.get("username") or claims.get("cognito:username") or subject
        return Principal(
            subject=subject,
            username=str(username),
            groups=groups,
            roles=frozenset(roles),
            client_id=client_id,
            expires_at=float(claims["exp"]),
        )


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | None:
    """The token of the call's `authorization: Bearer <token>`; None when there is none."""
    values = [value for key, value in metadata or () if key == AUTHORIZATION]
    if not values:
        return None
    if len(values) > 1:
        raise _refused("send one authorization entry, not several", TOKEN_MALFORMED)
    value = values[0]
    scheme, _, token = (value.decode("latin-1") if isinstance(value, bytes) else value).partition(
        " "
    )
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        raise _refused("the metadata must read 'Bearer <token>'", TOKEN_MALFORMED)
    return token


# --- authorization ---------------------------------------------------------------------


def policies_by_method(services: Sequence[tuple[str, Policy]]) -> dict[str, Roles]:
    """{"/pkg.Service/Rpc": roles} for the services' tables. A table naming an RPC its
    service does not have is a typo: refused at start-up. An RPC without an entry is
    logged here and refuses every call."""
    table: dict[str, Roles] = {}
    for full_name, policy in services:
        service = descriptor_pool.Default().FindServiceByName(full_name)
        names = {method.name for method in service.methods}
        unknown = sorted(set(policy) - names)
        if unknown:
            raise ValueError(f"{full_name}: the policy names RPCs it does not have: {unknown}")
        missing = sorted(names - set(policy))
        if missing:
            log.warning(
                "%s: no authorization policy for %s: they refuse every call",
                full_name,
                ", ".join(missing),
            )
        table.update({f"/{full_name}/{name}": roles for name, roles in policy.items()})
    return table


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call that carries a token and authorizes every call against
    the service's policies; the verified caller is then `caller()` in the handler."""

    def __init__(self, verifier: TokenVerifier, policies: Mapping[str, Roles]) -> None:
        self.verifier = verifier
        self.policies = dict(policies)

    async def admit(self, method: str, token: str | None) -> Principal | None:
        """The verified caller (None: anonymous) of a call it may make; else raises."""
        name = method.lstrip("/")
        roles = self.policies.get(method)
        if roles is None:
            raise PermissionDenied(
                f"{name} has no authorization policy: refused",
                reason=NO_POLICY,
                metadata={"method": name},
            )
        principal = await self.verifier.verify(token) if token is not None else None
        if Role.PUBLIC in roles:
            return principal
        if principal is None:
            raise Unauthenticated(
                f"{name} needs a signed-in caller: send 'authorization: Bearer <access token>'",
                reason=TOKEN_MISSING,
            )
        if not roles & principal.roles:
            required = " or ".join(sorted(roles))
            raise PermissionDenied(
                f"{name} is for {required} callers only",
                reason=ROLE_REQUIRED,
                metadata={"method": name, "required": ",".join(sorted(roles))},
            )
        return principal

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.split("/")[1] in OPEN_SERVICES:
            return handler
        metadata = handler_call_details.invocation_metadata

        async def enter(context: Any) -> None:
            try:
                token = bearer_token(metadata)
                principal = await self.admit(method, token)
            except Exception as exc:
                await _abort(context, exc, method)
            _incoming.set(
                _IncomingCall(
                    principal,
                    f"Bearer {token}" if token else None,
                    _text_entry(metadata, SESSION_CREDENTIAL),
                )
            )
            current_principal.set(principal.subject if principal else None)

        return _wrapped(handler, enter)


def _text_entry(metadata: Sequence[tuple[str, str | bytes]] | None, key: str) -> str | None:
    """The single text value of `key` in the metadata; None when absent, repeated or binary
    (the service that checks it refuses those itself)."""
    values = [value for name, value in metadata or () if name == key]
    return values[0] if len(values) == 1 and isinstance(values[0], str) else None


async def _abort(context: Any, exc: Exception, method: str) -> NoReturn:
    error = status_for(exc, method)
    if error is None:  # a bug of ours
        log.exception("authentication failed unexpectedly in %s", method, exc_info=exc)
        error = ErrorStatus(grpc.StatusCode.INTERNAL, "internal error", "INTERNAL")
    # The tracing wrapper of the context records the code from set_code.
    context.set_code(error.code)
    context.set_details(error.message)
    await context.abort_with_status(error.grpc_status())
    raise AssertionError("abort_with_status returned")  # it always raises


def _wrapped(handler: Any, enter: Callable[[Any], Awaitable[None]]) -> Any:
    """The same handler, with `enter(context)` run first in the call's own task."""
    options = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await enter(context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **options)
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: Any) -> AsyncIterator[Any]:
            await enter(context)
            async for response in inner_us(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, **options)
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: Any) -> Any:
            await enter(context)
            return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **options)
    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: Any) -> AsyncIterator[Any]:
        await enter(context)
        async for response in inner_ss(requests, context):
            yield response

    return grpc.stream_stream_rpc_method_handler(stream_stream, **options)


def server_interceptor(
    settings: AuthSettings, services: Sequence[tuple[str, Policy]]
) -> AuthInterceptor | None:
    """The interceptor for these settings and services' policies; None when disabled."""
    problems = settings.problems()
    if problems:
        raise RuntimeError("authentication is not configured: " + "; ".join(problems))
    policies = policies_by_method(services)
    if settings.disabled:
        log.warning("authentication is DISABLED: every RPC is open to anyone")
        return None
    return AuthInterceptor(TokenVerifier(settings), policies)


# --- the service's own identity ----------------------------------------------------------

# Fetches a new access token: (token, seconds it is valid).
TokenSource = Callable[[], Awaitable[tuple[str, float]]]


class ServiceCredentials:
    """The service's own access token, fetched when first needed and again once less than
    `refresh_margin` seconds of it are left, so a call never carries an expired one."""

    def __init__(
        self,
        source: TokenSource,
        *,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.source = source
        self.refresh_margin = refresh_margin
        self.fetches = 0
        self._clock = clock
        self._token = ""
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def _fresh(self) -> bool:
        return bool(self._token) and self._expires_at - self._clock() > self.refresh_margin

    async def token(self) -> str:
        if self._fresh():
            return self._token
        async with self._lock:
            if not self._fresh():
                started = self._clock()
                token, valid_for = await self.source()
                self.fetches += 1
                self._token, self._expires_at = token, started + valid_for
        return self._token


def cognito_password_source(settings: Settings) -> TokenSource:
    """The local stack's service identity: a Cognito user in the services group, signing
    in with USER_PASSWORD_AUTH (moto implements no OAuth token endpoint)."""
    auth = settings.auth

    async def fetch() -> tuple[str, float]:
        session = aws_session(settings)
        async with session.client("cognito-idp", endpoint_url=settings.aws_endpoint_url) as idp:
            answer = await idp.initiate_auth(
                ClientId=auth.service_client_id,
                AuthFlow="USER_PASSWORD_AUTH",
                AuthParameters={
                    "USERNAME": auth.service_username,
                    "PASSWORD": auth.service_password,
                },
            )
        result = answer["AuthenticationResult"]
        return str(result["AccessToken"]), float(result["ExpiresIn"])

    return fetch


def client_credentials_source(auth: AuthSettings) -> TokenSource:
    """AWS: Cognito's machine-to-machine flow, the OAuth 2.0 client-credentials grant at
    the user pool domain's /oauth2/token, with an app client that has a secret and the
    service scope."""

    def post() -> tuple[str, float]:
        basic = base64.b64encode(
            f"{auth.service_client_id}:{auth.service_client_secret}".encode()
        ).decode()
        body = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "scope": auth.service_scope}
        ).encode()
        request = urllib.request.Request(
            auth.token_url,
            data=body,
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
        return str(answer["access_token"]), float(answer["expires_in"])

    async def fetch() -> tuple[str, float]:
        return await asyncio.to_thread(post)

    return fetch


_service_credentials: ServiceCredentials | None = None


def configure_service_credentials(settings: Settings) -> ServiceCredentials | None:
    """Installs the process's own credentials (used by `CallerCredentials` for calls made
    as the service), from the settings; None when none are configured."""
    global _service_credentials
    auth = settings.auth
    source: TokenSource | None = None
    if auth.disabled:
        source = None
    elif auth.token_url and auth.service_client_secret:
        source = client_credentials_source(auth)
    elif auth.service_username and auth.service_password:
        source = cognito_password_source(settings)
    _service_credentials = ServiceCredentials(source) if source is not None else None
    return _service_credentials


class CallerCredentials(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds `authorization` to outgoing calls: inside a call, the caller's own (forwarded
    as received, nothing when the caller is anonymous); outside any call (background jobs)
    or inside `acting_as_service()`, the service's own token. Inside a call (not as the
    service), the caller's `x-session-credential` is forwarded too."""

    def __init__(self, service_credentials: ServiceCredentials | None = None) -> None:
        self._own = service_credentials

    async def _authorization(self) -> str | None:
        call = _incoming.get()
        if call is not None and not _acting_as_service.get():
            return call.authorization
        credentials = self._own or _service_credentials
        if credentials is None:
            return None
        return f"Bearer {await credentials.token()}"

    @staticmethod
    def _session_credential() -> str | None:
        call = _incoming.get()
        if call is None or _acting_as_service.get():
            return None
        return call.session_credential

    async def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.aio.ClientCallDetails, Any], Awaitable[Any]],
        client_call_details: grpc.aio.ClientCallDetails,
        request: Any,
    ) -> Any:
        existing = list(client_call_details.metadata or ())
        authorization = None
        method = client_call_details.method
        if isinstance(method, bytes):
            method = method.decode()
        # Health is open: a peer's health monitor needs no token (and fetches none).
        open_call = method.split("/")[1] in OPEN_SERVICES if method.count("/") >= 2 else False
        if not open_call and not any(key == AUTHORIZATION for key, _ in existing):
            authorization = await self._authorization()
        added = [] if authorization is None else [(AUTHORIZATION, authorization)]
        session_credential = self._session_credential() if not open_call else None
        if session_credential is not None and not any(
            key == SESSION_CREDENTIAL for key, _ in existing
        ):
            added.append((SESSION_CREDENTIAL, session_credential))
        if added:
            client_call_details = grpc.aio.ClientCallDetails(
                method=client_call_details.method,
                timeout=client_call_details.timeout,
                metadata=grpc.aio.Metadata(*existing, *added),
                credentials=client_call_details.credentials,
                wait_for_ready=client_call_details.wait_for_ready,
            )
        return await continuation(client_call_details, request)
