"""The catalog service process: books on PostgreSQL with a Redis cache."""

from __future__ import annotations

from contextlib import AsyncExitStack

from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.server import ServiceApp, Servicer, run_service
from cloudshelf.runtime.stores import open_postgres, open_redis


async def setup(settings: Settings, stack: AsyncExitStack) -> ServiceApp:
    _pool, postgres = await open_postgres(settings, stack)
    # Without Redis the catalog answers from PostgreSQL: degraded, not down.
    _cache, redis = await open_redis(settings, stack, required=False)
    return ServiceApp(
        servicers=[
            Servicer(
                catalog_pb2_grpc.CatalogServiceServicer(),  # type: ignore[abstract]  # RPCs not built yet answer UNIMPLEMENTED
                catalog_pb2_grpc.add_CatalogServiceServicer_to_server,
                catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
            )
        ],
        dependencies=[postgres, redis],
    )


def main() -> None:
    run_service("catalog", setup)
