"""The catalog service process: books on PostgreSQL with a Redis cache; events through a
transactional outbox to EventBridge."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

from cloudshelf.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.server import ServiceApp, Servicer, run_service
from cloudshelf.runtime.stores import (
    aws_session,
    open_aws_client,
    open_outbox_relay,
    open_postgres_with_generic_plans,
    open_redis,
)
from services.catalog.cache import CatalogCache
from services.catalog.handlers import CatalogHandlers
from services.catalog.invalidations import CacheInvalidations
from services.catalog.jobs import warm_cache
from services.catalog.outbox import EVENT_SOURCE, OUTBOX
from services.catalog.policy import CATALOG_POLICY
from services.catalog.purchases import OrderEventsConsumer, order_events_queue

log = logging.getLogger(__name__)


async def setup(settings: Settings, stack: AsyncExitStack) -> ServiceApp:
    # Searches of few matches keep their plans (BookSearch.generic_pool).
    pool, generic_pool, postgres = await open_postgres_with_generic_plans(settings, stack)
    # Without Redis the catalog answers from PostgreSQL: degraded, not down.
    redis_client, redis = await open_redis(settings, stack, required=False)
    relay, event_bus = await open_outbox_relay(settings, stack, pool, OUTBOX, EVENT_SOURCE)

    # The storefront's order events (verified purchases); they wait in the queue meanwhile.
    sqs = await open_aws_client(aws_session(settings), stack, "sqs", settings)
    order_events = OrderEventsConsumer(pool, sqs, order_events_queue())

    cache = CatalogCache(redis_client)
    invalidations = CacheInvalidations(pool, cache, settings.cache_invalidation_interval)

    async def warm_up() -> None:
        try:
            log.info("cache warm-up: %s", await warm_cache(pool, cache))
        except Exception as exc:  # a cold cache is slower, not broken
            log.warning("cache warm-up skipped: %s", exc)

    return ServiceApp(
        servicers=[
            Servicer(
                CatalogHandlers(pool, cache, relay, invalidations, generic_pool=generic_pool),
                catalog_pb2_grpc.add_CatalogServiceServicer_to_server,
                catalog_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
                CATALOG_POLICY,
            )
        ],
        # Events wait in the outbox while the bus is down: degraded, not down.
        dependencies=[
            postgres,
            redis,
            event_bus,
        ],
        background=[relay.run, invalidations.run, warm_up, order_events.run],
    )


def main() -> None:
    run_service("catalog", setup)
