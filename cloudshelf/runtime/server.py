"""One start-up call for every service: `run_service(name, setup)`.

`setup` opens the service's stores (registering their clean-up on the exit stack) and
returns its servicers, dependency checks and background jobs. The runtime adds the rest:
JSON logs, tracing, authentication and each servicer's authorization policy, error
mapping, health, reflection, TLS when certificate files are configured (tls.py), and a
graceful SIGTERM drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from cloudshelf.runtime.auth import Policy, configure_service_credentials, server_interceptor
from cloudshelf.runtime.config import Settings, env_float
from cloudshelf.runtime.health import SERVING, Dependency, DependencyMonitor
from cloudshelf.runtime.logs import configure_logging
from cloudshelf.runtime.rpc import ServerErrorInterceptor
from cloudshelf.runtime.telemetry import NOT_HEALTH_CHECK, configure_telemetry, shutdown_telemetry
from cloudshelf.runtime.tls import ReloadingCertificates

log = logging.getLogger("cloudshelf.server")

# The health name a liveness probe asks; "" (readiness) follows the dependencies.
LIVENESS = "liveness"
# Seconds a client connection lives before the server asks the client to reconnect
# (0: forever). A client pins one HTTP/2 connection to one pod behind a ClusterIP Service,
# so without this, replicas added later never receive the existing clients' calls.
MAX_CONNECTION_AGE_ENV = "CLOUDSHELF_MAX_CONNECTION_AGE_SECONDS"


def server_options(max_connection_age: float, grace: float) -> list[tuple[str, int]]:
    """gRPC server options: after `max_connection_age` seconds (gRPC adds +-10% jitter)
    the server sends GOAWAY, and calls in flight get `grace` seconds to finish."""
    if max_connection_age <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", round(max_connection_age * 1000)),
        ("grpc.max_connection_age_grace_ms", round(grace * 1000)),
    ]


@dataclass(frozen=True)
class Servicer:
    """A servicer, the generated function that registers it, and who may call each of its
    RPCs, e.g. Servicer(CatalogHandlers(...),
    catalog_pb2_grpc.add_CatalogServiceServicer_to_server,
    "cloudshelf.catalog.v1.CatalogService", CATALOG_POLICY). An RPC missing from the
    policy refuses every call (PERMISSION_DENIED), and start-up logs a warning."""

    implementation: Any
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    full_name: str
    policy: Policy = field(default_factory=dict)


@dataclass
class ServiceApp:
    servicers: Sequence[Servicer]
    dependencies: Sequence[Dependency] = ()
    # Long-running jobs (outbox relay, consumers) run beside the server, cancelled at stop.
    background: Sequence[Callable[[], Coroutine[Any, Any, None]]] = field(default_factory=list)
    # Run inside tracing and error mapping, so a DomainError they raise (e.g.
    # Unauthenticated from an auth interceptor) becomes its status code.
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()


Setup = Callable[[Settings, AsyncExitStack], Awaitable[ServiceApp]]


def run_service(service: str, setup: Setup) -> None:
    """Entry point of every service process."""
    configure_logging(service)
    configure_telemetry(service)
    try:
        asyncio.run(serve(Settings.from_env(service), setup))
    finally:
        shutdown_telemetry()


async def serve(settings: Settings, setup: Setup) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async with AsyncExitStack() as stack:
        configure_service_credentials(settings)
        app = await setup(settings, stack)
        auth = server_interceptor(settings.auth, [(s.full_name, s.policy) for s in app.servicers])
        server = grpc.aio.server(
            interceptors=[
                aio_server_interceptor(filter_=NOT_HEALTH_CHECK),
                # Before the error mapping's request checks: a caller who may not call
                # learns nothing about the request's validity.
                *([auth] if auth is not None else []),
                ServerErrorInterceptor(),
                *app.interceptors,
            ],
            options=server_options(env_float(MAX_CONNECTION_AGE_ENV, 0.0), settings.shutdown_grace),
        )
        for servicer in app.servicers:
            servicer.add_to_server(servicer.implementation, server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        service_names = [s.full_name for s in app.servicers]
        reflection.enable_server_reflection(
            [
                *service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        _add_port(server, settings)
        health_server = None
        if settings.health_listen_addr:
            # Plaintext, health only: the kubelet's gRPC probes speak no TLS.
            health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(health, health_server)
            if health_server.add_insecure_port(settings.health_listen_addr) == 0:
                raise RuntimeError(f"cannot listen on {settings.health_listen_addr}")

        # Liveness answers "the process serves": dependency outages must not restart it.
        await health.set(LIVENESS, SERVING)
        monitor = DependencyMonitor(
            health, service_names, app.dependencies, settings.health_interval
        )
        await monitor.check_once()
        await server.start()
        if health_server is not None:
            await health_server.start()
        log.info(
            "%s serving on %s",
            settings.service,
            settings.listen_addr,
            extra={
                "services": service_names,
                "degraded": monitor.degraded,
                "transport": _transport(settings),
                "health_addr": settings.health_listen_addr,
            },
        )
        monitor_task = asyncio.create_task(monitor.run(), name="health-monitor")
        jobs = [asyncio.create_task(job(), name=job.__name__) for job in app.background]

        await stop.wait()
        log.info("draining: no new calls, %.1fs for in-flight ones", settings.shutdown_grace)
        await _cancel([monitor_task])
        await health.enter_graceful_shutdown()
        await server.stop(settings.shutdown_grace)
        if health_server is not None:
            await health_server.stop(0)
        await _cancel(jobs)
        log.info("%s stopped", settings.service)


def _add_port(server: grpc.aio.Server, settings: Settings) -> None:
    """Plaintext unless certificate files are configured: then TLS, and mTLS with a CA."""
    if settings.server_tls is None:
        port = server.add_insecure_port(settings.listen_addr)
    else:
        certificates = ReloadingCertificates(settings.server_tls)
        port = server.add_secure_port(settings.listen_addr, certificates.server_credentials())
    if port == 0:
        raise RuntimeError(f"cannot listen on {settings.listen_addr}")


def _transport(settings: Settings) -> str:
    if settings.server_tls is None:
        return "plaintext"
    return "mtls" if settings.server_tls.ca_file else "tls"


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
