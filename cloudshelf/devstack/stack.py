"""The whole local mesh: backing servers, provisioning, the five services, health."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import secrets
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloudshelf.devstack.components import (
    LOCALHOST,
    AwsEmulator,
    ManagedProcess,
    Postgres,
    Redis,
    free_port,
    wait_until,
)
from cloudshelf.devstack.identity import LocalIdentity
from cloudshelf.runtime.config import DEFAULT_PORTS, Settings
from cloudshelf.runtime.paging import PAGE_TOKEN_KEY_ENV

SERVICES = tuple(DEFAULT_PORTS)
# Worker processes (no RPCs, gRPC health only): name -> (the service whose settings and
# stores it uses, its module, its default health port).
WORKERS = {"analytics-consumer": ("analytics", "services.analytics.consumer", 50063)}
# Dependency names the services report health for, as "dependency/<name>".
DEPENDENCY_NAMES = ("postgres", "redis", "dynamodb", "kinesis", "s3", "cart", "catalog")
# Services with a PostgreSQL database of their own (named after the service).
POSTGRES_SERVICES = ("catalog", "analytics", "governance", "storefront")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_BOOKS = 2000


@dataclass
class StackPorts:
    postgres: int
    redis: int
    aws: int
    services: dict[str, int] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)

    @classmethod
    def defaults(cls) -> StackPorts:
        """Below Linux's ephemeral range (32768+), so an outgoing connection's port can
        never hold a store's port when it restarts."""

        def port(name: str, default: int) -> int:
            return int(os.environ.get(f"CLOUDSHELF_LOCAL_{name}_PORT", default))

        return cls(
            postgres=port("POSTGRES", 15432),
            redis=port("REDIS", 16379),
            aws=port("AWS", 15000),
            services={name: port(name.upper(), default) for name, default in DEFAULT_PORTS.items()},
            workers={
                name: port(name.upper().replace("-", "_"), default)
                for name, (_, _, default) in WORKERS.items()
            },
        )

    @classmethod
    def free(cls) -> StackPorts:
        return cls(
            free_port(),
            free_port(),
            free_port(),
            {name: free_port() for name in SERVICES},
            {name: free_port() for name in WORKERS},
        )


class Stack:
    def __init__(
        self,
        state_dir: Path,
        ports: StackPorts,
        *,
        durable: bool = True,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.ports = ports
        self.extra_env = extra_env or {}
        state_dir.mkdir(parents=True, exist_ok=True)
        self.page_token_key = _page_token_key(state_dir)
        self.postgres = Postgres(state_dir, ports.postgres, durable=durable)
        self.redis = Redis(state_dir, ports.redis)
        self.aws = AwsEmulator(state_dir, ports.aws)
        # The token issuer (a Cognito pool on the emulator); known once provisioned.
        self.identity = LocalIdentity.load(state_dir, self.aws.url)
        self.services = {
            name: ManagedProcess(
                name, [sys.executable, "-m", f"services.{name}"], state_dir, self.service_env(name)
            )
            for name in SERVICES
        }
        # A stack.json written before a worker existed: its default port.
        for name, (_, _, default_port) in WORKERS.items():
            ports.workers.setdefault(name, default_port)
        self.workers = {
            name: ManagedProcess(
                name, [sys.executable, "-m", module], state_dir, self.worker_env(name)
            )
            for name, (_, module, _) in WORKERS.items()
        }

    # --- configuration -------------------------------------------------------------------

    def address(self, service: str) -> str:
        return f"{LOCALHOST}:{self.ports.services[service]}"

    def service_env(self, service: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
        """The environment a service process gets: exactly what a pod gets in a cluster,
        with local endpoints and the emulator's dummy credentials."""
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(REPO_ROOT),
                "CLOUDSHELF_LISTEN_ADDR": self.address(service),
                "CLOUDSHELF_POSTGRES_DSN": self.postgres.dsn(service),
                "CLOUDSHELF_REDIS_URL": self.redis.url,
                "AWS_ENDPOINT_URL": self.aws.url,
                "AWS_ACCESS_KEY_ID": "local",
                "AWS_SECRET_ACCESS_KEY": "local",
                "AWS_REGION": "us-east-1",
                "OTEL_SERVICE_NAME": service,
                # One key for every service and replica: a token from one is valid at all.
                PAGE_TOKEN_KEY_ENV: self.page_token_key,
            }
        )
        # Who issues tokens, which app client, and the service's own sign-in.
        env.update(self.identity.service_env(service))
        env.update({f"CLOUDSHELF_{peer.upper()}_ADDR": self.address(peer) for peer in SERVICES})
        env.update(self.extra_env)
        env.update(overrides or {})
        return env

    def worker_address(self, worker: str) -> str:
        return f"{LOCALHOST}:{self.ports.workers[worker]}"

    def worker_env(self, worker: str, overrides: dict[str, str] | None = None) -> dict[str, str]:
        """A worker's environment: its service's, with its own health port and name."""
        service = WORKERS[worker][0]
        own = {"CLOUDSHELF_LISTEN_ADDR": self.worker_address(worker), "OTEL_SERVICE_NAME": worker}
        return self.service_env(service, {**own, **(overrides or {})})

    def settings(self, service: str) -> Settings:
        return Settings.from_env(service, self.service_env(service))

    def save(self) -> None:
        (self.state_dir / "stack.json").write_text(json.dumps(asdict(self.ports), indent=2))

    @classmethod
    def load(cls, state_dir: Path) -> Stack:
        """The stack as `up` recorded it (its ports), or one with the default ports."""
        saved = state_dir / "stack.json"
        ports = (
            StackPorts(**json.loads(saved.read_text())) if saved.exists() else StackPorts.defaults()
        )
        return cls(state_dir, ports)

    # --- life cycle ----------------------------------------------------------------------

    def start_backing_servers(self) -> None:
        self.postgres.start()
        self.redis.start()
        self.aws.start()

    async def provision(self) -> list[str]:
        """Creates the identity pool and its users, databases, schemas, tables, streams and
        buckets; safe to repeat."""
        done = await asyncio.to_thread(self.identity.provision, SERVICES)
        done += [
            f"database {name}: created"
            for name in await self.postgres.create_databases(list(POSTGRES_SERVICES))
        ]
        for service in SERVICES:
            module = importlib.import_module(f"services.{service}.provision")
            done += [
                f"{service}: {line}" for line in await module.provision(self.settings(service))
            ]
        return done

    def start_services(self, names: tuple[str, ...] = SERVICES) -> None:
        for name in names:
            # Provisioning may have made a new identity pool since this object was built.
            self.services[name].env = self.service_env(name)
            self.services[name].start()

    def start_workers(self) -> None:
        for name, process in self.workers.items():
            process.env = self.worker_env(name)
            process.start()

    def wait_until_workers_serve(self, timeout: float = 60.0) -> None:
        for name, process in self.workers.items():

            def serving(name: str = name, process: ManagedProcess = process) -> bool:
                if not process.running():
                    raise RuntimeError(f"{name} exited; see {process.log_file}")
                return health_status(self.worker_address(name)) == "SERVING"

            wait_until(serving, timeout, name)

    def wait_until_serving(self, names: tuple[str, ...] = SERVICES, timeout: float = 60.0) -> None:
        """Until each service is SERVING with none of its dependencies failing: a storefront
        started before the catalog is SERVING but degraded until its next health check."""
        for name in names:
            process = self.services[name]

            def serving(name: str = name, process: ManagedProcess = process) -> bool:
                if not process.running():
                    raise RuntimeError(f"{name} exited; see {process.log_file}")
                return self.health(name) == "SERVING" and not self.failing_dependencies(name)

            wait_until(serving, timeout, name)

    def failing_dependencies(self, service: str) -> list[str]:
        return [
            name
            for name in DEPENDENCY_NAMES
            if self.health(service, f"dependency/{name}") == "NOT_SERVING"
        ]

    async def load_demo_data(self, books: int = DEMO_BOOKS) -> list[str]:
        """A small realistic catalog, once: skipped when the catalog has books already."""
        from services.catalog.demo import seed_catalog
        from services.catalog.popular import refresh_popular_books

        dsn = self.postgres.dsn("catalog")
        conn = await asyncpg.connect(dsn)
        try:
            if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM book_catalog.books)"):
                return ["demo data: catalog has books, left as is"]
        finally:
            await conn.close()
        report = await seed_catalog(dsn, books, progress=False)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
        try:
            await refresh_popular_books(pool)
        finally:
            await pool.close()
        return [
            f"demo data: {report.books} books, {report.authors} authors, {report.reviews} reviews"
        ]

    def up(self) -> list[str]:
        self.start_backing_servers()

        async def prepare() -> list[str]:
            return await self.provision() + await self.load_demo_data()

        done = asyncio.run(prepare())
        self.save()
        self.start_services()
        self.start_workers()
        self.wait_until_serving()
        self.wait_until_workers_serve()
        return done

    def down(self) -> None:
        for process in (*self.workers.values(), *self.services.values()):
            process.stop()
        self.aws.stop()
        self.redis.stop()
        self.postgres.stop()

    # --- inspection ----------------------------------------------------------------------

    def health(self, service: str, check: str = "") -> str:
        return health_status(self.address(service), check)


def _page_token_key(state_dir: Path) -> str:
    """The stack's page-token signing key, made once and kept in its state folder, so
    tokens stay valid across restarts of the services."""
    path = state_dir / "page-token.key"
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def health_status(address: str, check: str = "") -> str:
    """A grpc.health.v1 status name (SERVING, NOT_SERVING, ...) or UNREACHABLE."""
    with grpc.insecure_channel(address) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=check), timeout=1.0
            )
        except grpc.RpcError as exc:
            return "UNREACHABLE" if exc.code() != grpc.StatusCode.NOT_FOUND else "SERVICE_UNKNOWN"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))
