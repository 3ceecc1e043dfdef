"""Creates the cart context's DynamoDB tables (with TTL on expiresAt), and the queue of
the catalog's price changes with the EventBridge rule that fills it."""

from __future__ import annotations

from contextlib import AsyncExitStack

from cloudshelf.runtime.aws_resources import (
    ensure_dynamodb_table,
    ensure_event_bus,
    ensure_queue,
    ensure_rule_to_queue,
)
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.stores import aws_session, open_aws_client
from services.cart.notifications import PRICE_CHANGES_PATTERN
from services.cart.tables import (
    TTL_ATTRIBUTE,
    book_holders_table,
    book_holders_table_name,
    cart_table,
    notifications_table,
    notifications_table_name,
    request_ids_table,
    request_ids_table_name,
    sessions_table,
    stream_leases_table,
    stream_leases_table_name,
)


async def provision(settings: Settings) -> list[str]:
    done = []
    async with AsyncExitStack() as stack:
        session = aws_session(settings)
        dynamodb = await open_aws_client(session, stack, "dynamodb", settings)
        for definition in (
            cart_table(settings.cart_table),
            sessions_table(settings.sessions_table),
            request_ids_table(request_ids_table_name(settings.cart_table)),
            notifications_table(notifications_table_name(settings.cart_table)),
            book_holders_table(book_holders_table_name(settings.cart_table)),
            stream_leases_table(stream_leases_table_name(settings.cart_table)),
        ):
            created = await ensure_dynamodb_table(dynamodb, definition, TTL_ATTRIBUTE)
            done.append(
                f"dynamodb table {definition['TableName']}: {'created' if created else 'exists'}"
            )
        done += await _provision_price_changes(settings, stack)
    return done


async def _provision_price_changes(settings: Settings, stack: AsyncExitStack) -> list[str]:
    """The catalog's price changes, routed by a rule on the bus to the cart's queue."""
    session = aws_session(settings)
    sqs = await open_aws_client(session, stack, "sqs", settings)
    events = await open_aws_client(session, stack, "events", settings)
    name = settings.cart_price_changes_queue
    queue, dead_letters = await ensure_queue(sqs, name)
    # The catalog's provisioning makes the bus too; whichever runs first creates it.
    await ensure_event_bus(events, settings.event_bus)
    await ensure_rule_to_queue(
        events,
        sqs,
        bus=settings.event_bus,
        rule=name,
        pattern=PRICE_CHANGES_PATTERN,
        queue=queue,
    )
    return [
        f"sqs queue {name} (dead letters: {dead_letters.url.rsplit('/', 1)[-1]}): ready",
        f"eventbridge rule {name} on {settings.event_bus} -> {name}: ready",
    ]
