"""Creates what the catalog needs: its schema (migrations up to the latest), the event
bus its outbox relay publishes to, and the queue the storefront's order events reach it
through (services/catalog/purchases.py)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from cloudshelf.runtime.aws_resources import ensure_event_bus
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.migrations import migrate_to_latest
from cloudshelf.runtime.stores import aws_session, open_aws_client
from services.catalog.purchases import ensure_order_events_route, order_events_queue


async def provision(settings: Settings) -> list[str]:
    done = await migrate_to_latest(settings.postgres_dsn, "services.catalog")
    async with AsyncExitStack() as stack:
        events = await open_aws_client(aws_session(settings), stack, "events", settings)
        created = await ensure_event_bus(events, settings.event_bus)
        done.append(f"event bus {settings.event_bus}: {'created' if created else 'exists'}")
        sqs = await open_aws_client(aws_session(settings), stack, "sqs", settings)
        done += await ensure_order_events_route(
            events, sqs, settings.event_bus, order_events_queue()
        )
    return done
