"""grpc.health.v1 driven by real dependency checks.

Readiness ("" and the service names) means "this pod can serve": checks run on connections
of their own (see stores.py), so a busy request pool is load, not an outage. The checks are
not traced.

Each dependency is reported under its own name ("dependency/postgres"); the overall status
("" and each served service name) is SERVING only while every *required* dependency passes.
An optional dependency that fails (a cache) leaves the service SERVING but degraded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio
from opentelemetry.instrumentation.utils import suppress_instrumentation

log = logging.getLogger("cloudshelf.health")

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass(frozen=True)
class Dependency:
    name: str
    # Raises (or times out) when the dependency cannot serve.
    check: Callable[[], Awaitable[object]]
    required: bool = True

    @property
    def health_name(self) -> str:
        return f"dependency/{self.name}"


class DependencyMonitor:
    def __init__(
        self,
        health: health_aio.HealthServicer,
        service_names: Sequence[str],
        dependencies: Sequence[Dependency],
        interval: float,
    ) -> None:
        self.health = health
        self.service_names = ["", *service_names]
        self.dependencies = list(dependencies)
        self.interval = interval
        self.passing: dict[str, bool] = {}

    async def _passes(self, dependency: Dependency) -> bool:
        try:
            await asyncio.wait_for(dependency.check(), timeout=max(self.interval, 1.0))
            return True
        except Exception as exc:  # any failure means "not usable now"
            if self.passing.get(dependency.name, True):
                log.warning(
                    "dependency %s failing: %s: %s",
                    dependency.name,
                    type(exc).__name__,
                    exc,
                    extra={"dependency": dependency.name},
                )
            return False

    async def check_once(self) -> bool:
        """Runs every check and publishes the statuses; returns the overall result."""
        # A check every few seconds per replica would be a root trace each (a SELECT 1, a
        # PING): noise that buries real traces. The checks' tasks inherit the suppression.
        with suppress_instrumentation():
            results = await asyncio.gather(*(self._passes(d) for d in self.dependencies))
        for dependency, ok in zip(self.dependencies, results, strict=True):
            if self.passing.get(dependency.name) is False and ok:
                log.info("dependency %s recovered", dependency.name)
            self.passing[dependency.name] = ok
            await self.health.set(dependency.health_name, SERVING if ok else NOT_SERVING)
        overall = all(ok for d, ok in zip(self.dependencies, results, strict=True) if d.required)
        for name in self.service_names:
            await self.health.set(name, SERVING if overall else NOT_SERVING)
        return overall

    @property
    def degraded(self) -> list[str]:
        return [d.name for d in self.dependencies if not self.passing.get(d.name, True)]

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check_once()
