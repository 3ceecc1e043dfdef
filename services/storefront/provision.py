"""Creates what the storefront needs: its schema (orders, outbox, idempotency keys;
migrations up to the latest) and the event bus its outbox relay publishes to."""

from __future__ import annotations

from contextlib import AsyncExitStack

from cloudshelf.runtime.aws_resources import ensure_event_bus
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.migrations import migrate_to_latest
from cloudshelf.runtime.stores import aws_session, open_aws_client


async def provision(settings: Settings) -> list[str]:
    done = await migrate_to_latest(settings.postgres_dsn, "services.storefront")
    async with AsyncExitStack() as stack:
        events = await open_aws_client(aws_session(settings), stack, "events", settings)
        created = await ensure_event_bus(events, settings.event_bus)
    done.append(f"event bus {settings.event_bus}: {'created' if created else 'exists'}")
    return done
