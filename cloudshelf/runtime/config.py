"""Configuration from environment variables, with defaults that match the local stack.

The local stack and a cluster differ only in these values (endpoints, credentials).
AWS endpoints and credentials use boto's own variables (AWS_ENDPOINT_URL, AWS_REGION, ...).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

# Default gRPC ports of the local stack; a cluster sets CLOUDSHELF_LISTEN_ADDR instead.
DEFAULT_PORTS: dict[str, int] = {
    "catalog": 50051,
    "cart": 50052,
    "analytics": 50053,
    "governance": 50054,
    "storefront": 50055,
}


def env_text(name: str, default: str, environ: Mapping[str, str] | None = None) -> str:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or default


def env_float(name: str, default: float, environ: Mapping[str, str] | None = None) -> float:
    raw = env_text(name, "", environ)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


def env_int(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    raw = env_text(name, "", environ)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc


def env_list(name: str, environ: Mapping[str, str] | None = None) -> frozenset[str]:
    return frozenset(
        item.strip() for item in env_text(name, "", environ).split(",") if item.strip()
    )


def env_bool(name: str, environ: Mapping[str, str] | None = None) -> bool:
    raw = env_text(name, "false", environ).lower()
    if raw not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError(f"{name} must be true or false, got {raw!r}")
    return raw in ("true", "1", "yes")


AUTH_DISABLED_ENV = "CLOUDSHELF_AUTH_DISABLED"


@dataclass(frozen=True)
class AuthSettings:
    """Who may call: the token issuer (a Cognito user pool) and, for calls a service makes
    as itself, the service's own credentials. See cloudshelf/runtime/auth.py."""

    # The `iss` claim tokens must carry, e.g. https://cognito-idp.<region>.amazonaws.com/<pool>.
    issuer: str = ""
    # Where the issuer's public keys are: <issuer>/.well-known/jwks.json unless set (the
    # local emulator serves them at another address than the issuer it writes in tokens).
    jwks_url: str = ""
    # App clients whose tokens are accepted: `client_id` of access tokens, `aud` of id tokens.
    client_ids: frozenset[str] = frozenset()
    # Kinds of token accepted (`token_use`): access tokens only unless "id" is added.
    token_uses: frozenset[str] = frozenset({"access"})
    # Seconds of clock skew tolerated on exp, nbf and iat.
    leeway: float = 30.0
    # Shortest time between two fetches of the JWKS (a token with an unknown `kid`).
    jwks_refetch_interval: float = 60.0
    # Cognito groups (`cognito:groups`) that grant the admin and service roles; a token
    # whose `scope` holds service_scope (Cognito's client-credentials flow) is a service too.
    admin_group: str = "admins"
    service_group: str = "services"
    service_scope: str = "cloudshelf/service"
    # Only for benchmarks and experiments: no interceptor at all, every RPC open.
    disabled: bool = False
    # The service's own identity, for calls it makes as itself. Either a Cognito user in
    # service_group signing in with USER_PASSWORD_AUTH (the local stack), or an app client
    # with a secret using the OAuth client-credentials grant at token_url (AWS).
    service_client_id: str = ""
    service_username: str = ""
    service_password: str = field(default="", repr=False)
    service_client_secret: str = field(default="", repr=False)
    token_url: str = ""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AuthSettings:
        def env(name: str, default: str = "") -> str:
            return env_text(f"CLOUDSHELF_AUTH_{name}", default, environ)

        issuer = env("ISSUER").rstrip("/")
        client_ids = env_list("CLOUDSHELF_AUTH_CLIENT_IDS", environ)
        return cls(
            issuer=issuer,
            jwks_url=env("JWKS_URL", f"{issuer}/.well-known/jwks.json" if issuer else ""),
            client_ids=client_ids,
            token_uses=env_list("CLOUDSHELF_AUTH_TOKEN_USES", environ) or cls.token_uses,
            leeway=env_float("CLOUDSHELF_AUTH_LEEWAY_SECONDS", cls.leeway, environ),
            jwks_refetch_interval=env_float(
                "CLOUDSHELF_AUTH_JWKS_REFETCH_SECONDS", cls.jwks_refetch_interval, environ
            ),
            admin_group=env("ADMIN_GROUP", cls.admin_group),
            service_group=env("SERVICE_GROUP", cls.service_group),
            service_scope=env("SERVICE_SCOPE", cls.service_scope),
            disabled=env_bool(AUTH_DISABLED_ENV, environ),
            service_client_id=env("SERVICE_CLIENT_ID", min(client_ids, default="")),
            service_username=env("SERVICE_USERNAME"),
            service_password=env("SERVICE_PASSWORD"),
            service_client_secret=env("SERVICE_CLIENT_SECRET"),
            token_url=env("TOKEN_URL"),
        )

    def problems(self) -> list[str]:
        """What keeps a service from verifying tokens (empty: nothing)."""
        if self.disabled:
            return []
        problems = []
        if not self.issuer:
            problems.append(
                f"CLOUDSHELF_AUTH_ISSUER is not set (or set {AUTH_DISABLED_ENV}=true, "
                "never in a cluster)"
            )
        if not self.client_ids:
            problems.append("CLOUDSHELF_AUTH_CLIENT_IDS lists no app client")
        if not self.token_uses <= {"access", "id"}:
            problems.append("CLOUDSHELF_AUTH_TOKEN_USES may list only access and id")
        return problems


def service_address(service: str, environ: Mapping[str, str] | None = None) -> str:
    """Where a service is reached by its peers: CLOUDSHELF_<SERVICE>_ADDR."""
    default = f"127.0.0.1:{DEFAULT_PORTS[service]}"
    return env_text(f"CLOUDSHELF_{service.upper()}_ADDR", default, environ)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one side of TLS connections.

    On a server: its certificate chain and key, and the CA that client certificates must be
    signed by (when set, a client without such a certificate is refused: mTLS). On the
    client side of peer channels: the certificate and key presented to peers (optional) and
    the CA that peers' certificates are verified against (unset: the system's roots).
    """

    cert_file: str | None
    key_file: str | None
    ca_file: str | None


def _server_tls(environ: Mapping[str, str] | None) -> TlsFiles | None:
    cert = env_text("CLOUDSHELF_TLS_CERT_FILE", "", environ) or None
    key = env_text("CLOUDSHELF_TLS_KEY_FILE", "", environ) or None
    ca = env_text("CLOUDSHELF_TLS_CA_FILE", "", environ) or None
    if (cert is None) != (key is None) or (ca and not cert):
        raise ValueError(
            "CLOUDSHELF_TLS_CERT_FILE and CLOUDSHELF_TLS_KEY_FILE go together, and "
            "CLOUDSHELF_TLS_CA_FILE needs both"
        )
    return None if cert is None else TlsFiles(cert, key, ca)


def _peer_tls(environ: Mapping[str, str] | None) -> TlsFiles | None:
    """Each CLOUDSHELF_PEER_TLS_* file defaults to its CLOUDSHELF_TLS_* one: one certificate
    (usages server and client auth) serves a service both ways."""

    def file(name: str) -> str | None:
        own = env_text(f"CLOUDSHELF_{name}", "", environ)
        return env_text(f"CLOUDSHELF_PEER_{name}", own, environ) or None

    cert, key, ca = file("TLS_CERT_FILE"), file("TLS_KEY_FILE"), file("TLS_CA_FILE")
    if (cert is None) != (key is None):
        raise ValueError(
            "CLOUDSHELF_PEER_TLS_CERT_FILE and CLOUDSHELF_PEER_TLS_KEY_FILE go together"
        )
    return None if cert is None and ca is None else TlsFiles(cert, key, ca)


def parse_cidrs(name: str, raw: str) -> tuple[IPNetwork, ...]:
    """Comma-separated CIDRs (or bare addresses) of the variable `name`."""
    networks = []
    for item in raw.split(","):
        if item.strip():
            try:
                networks.append(ipaddress.ip_network(item.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"{name}: {item.strip()!r} is not a CIDR") from exc
    return tuple(networks)


TRUSTED_PROXY_CIDRS_ENV = "CLOUDSHELF_TRUSTED_PROXY_CIDRS"


def trusted_proxy_cidrs(environ: Mapping[str, str] | None = None) -> tuple[IPNetwork, ...]:
    """The gateways whose x-forwarded-for and gateway headers are believed (none by default)."""
    return parse_cidrs(TRUSTED_PROXY_CIDRS_ENV, env_text(TRUSTED_PROXY_CIDRS_ENV, "", environ))


@dataclass(frozen=True)
class Settings:
    service: str
    listen_addr: str
    postgres_dsn: str
    redis_url: str
    aws_region: str
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace: float
    # Seconds between dependency checks that drive grpc.health.v1.
    health_interval: float
    # Deadline applied to outgoing calls when the incoming call carries none.
    default_call_timeout: float
    # Sizes and timeouts of the store clients (size them against max_connections).
    postgres_pool_min_size: int = 0
    postgres_pool_max_size: int = 10
    # Seconds a statement may run before the client gives up on it.
    postgres_command_timeout: float = 30.0
    redis_max_connections: int = 32
    # Seconds between rounds of the catalog's loop that applies cache invalidations that
    # their writer could not apply (Redis unreachable, or the writer died after commit).
    cache_invalidation_interval: float = 1.0
    # None: plaintext (the local default). Server side, and the side of peer channels.
    server_tls: TlsFiles | None = None
    peer_tls: TlsFiles | None = None
    # A plaintext port that serves only grpc.health.v1 (the kubelet's gRPC probes speak no
    # TLS); None: health is served on the main port only.
    health_listen_addr: str | None = None
    # Gateways whose forwarded client address and headers are believed (client_info.py).
    trusted_proxy_cidrs: tuple[IPNetwork, ...] = ()
    cart_table: str = "CloudShelf-ShoppingCart"
    sessions_table: str = "CloudShelf-UserSessions"
    # The SQS queue of the catalog's price changes that the cart turns into notifications.
    cart_price_changes_queue: str = "cloudshelf-cart-price-changes"
    analytics_stream: str = "cloudshelf-analytics-stream"
    data_lake_bucket: str = "cloudshelf-analytics-data"
    event_bus: str = "cloudshelf-event-bus"
    timestream_database: str = "CloudShelfAnalytics"
    # Unset in a cluster: boto then uses the real endpoints and the pod's credentials.
    aws_endpoint_url: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    peers: dict[str, str] = field(default_factory=dict)
    auth: AuthSettings = field(default_factory=AuthSettings)

    @classmethod
    def from_env(cls, service: str, environ: Mapping[str, str] | None = None) -> Settings:
        """Reads the process environment, or `environ` when given (the local stack)."""

        def env(name: str, default: str) -> str:
            return env_text(name, default, environ)

        def number(name: str, default: float) -> float:
            return env_float(name, default, environ)

        def whole(name: str, default: int) -> int:
            return env_int(name, default, environ)

        return cls(
            service=service,
            listen_addr=env("CLOUDSHELF_LISTEN_ADDR", f"127.0.0.1:{DEFAULT_PORTS[service]}"),
            # Scoped first: a process that acts for several services (the CLI in a pod)
            # must never aim one service's migrations at another's database.
            postgres_dsn=env(
                f"CLOUDSHELF_{service.upper()}_POSTGRES_DSN",
                env(
                    "CLOUDSHELF_POSTGRES_DSN", f"postgresql://cloudshelf@127.0.0.1:15432/{service}"
                ),
            ),
            redis_url=env("CLOUDSHELF_REDIS_URL", "redis://127.0.0.1:16379/0"),
            aws_region=env("AWS_REGION", env("AWS_DEFAULT_REGION", "us-east-1")),
            shutdown_grace=number("CLOUDSHELF_SHUTDOWN_GRACE_SECONDS", 10.0),
            health_interval=number("CLOUDSHELF_HEALTH_INTERVAL_SECONDS", 2.0),
            default_call_timeout=number("CLOUDSHELF_CALL_TIMEOUT_SECONDS", 5.0),
            postgres_pool_min_size=whole(
                "CLOUDSHELF_POSTGRES_POOL_MIN_SIZE", cls.postgres_pool_min_size
            ),
            postgres_pool_max_size=whole(
                "CLOUDSHELF_POSTGRES_POOL_MAX_SIZE", cls.postgres_pool_max_size
            ),
            postgres_command_timeout=number(
                "CLOUDSHELF_POSTGRES_COMMAND_TIMEOUT_SECONDS", cls.postgres_command_timeout
            ),
            redis_max_connections=whole(
                "CLOUDSHELF_REDIS_MAX_CONNECTIONS", cls.redis_max_connections
            ),
            cache_invalidation_interval=number(
                "CLOUDSHELF_CACHE_INVALIDATION_INTERVAL_SECONDS", cls.cache_invalidation_interval
            ),
            server_tls=_server_tls(environ),
            peer_tls=_peer_tls(environ),
            health_listen_addr=env("CLOUDSHELF_HEALTH_LISTEN_ADDR", "") or None,
            trusted_proxy_cidrs=trusted_proxy_cidrs(environ),
            cart_table=env("CLOUDSHELF_CART_TABLE", cls.cart_table),
            sessions_table=env("CLOUDSHELF_SESSIONS_TABLE", cls.sessions_table),
            cart_price_changes_queue=env(
                "CLOUDSHELF_CART_PRICE_CHANGES_QUEUE", cls.cart_price_changes_queue
            ),
            analytics_stream=env("CLOUDSHELF_ANALYTICS_STREAM", cls.analytics_stream),
            data_lake_bucket=env("CLOUDSHELF_DATA_LAKE_BUCKET", cls.data_lake_bucket),
            event_bus=env("CLOUDSHELF_EVENT_BUS", cls.event_bus),
            timestream_database=env("CLOUDSHELF_TIMESTREAM_DATABASE", cls.timestream_database),
            aws_endpoint_url=env("AWS_ENDPOINT_URL", "") or None,
            aws_access_key_id=env("AWS_ACCESS_KEY_ID", "") or None,
            aws_secret_access_key=env("AWS_SECRET_ACCESS_KEY", "") or None,
            peers={
                name: service_address(name, environ) for name in DEFAULT_PORTS if name != service
            },
            auth=AuthSettings.from_env(environ),
        )
