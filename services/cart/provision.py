"""Creates the cart context's DynamoDB tables (with TTL on expiresAt)."""

from __future__ import annotations

from contextlib import AsyncExitStack

from cloudshelf.runtime.aws_resources import ensure_dynamodb_table
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.stores import aws_session, open_aws_client
from services.cart.tables import (
    TTL_ATTRIBUTE,
    book_holders_table,
    book_holders_table_name,
    cart_table,
    request_ids_table,
    request_ids_table_name,
    sessions_table,
    stream_leases_table,
    stream_leases_table_name,
)


async def provision(settings: Settings) -> list[str]:
    done = []
    async with AsyncExitStack() as stack:
        dynamodb = await open_aws_client(aws_session(settings), stack, "dynamodb", settings)
        for definition in (
            cart_table(settings.cart_table),
            sessions_table(settings.sessions_table),
            request_ids_table(request_ids_table_name(settings.cart_table)),
            book_holders_table(book_holders_table_name(settings.cart_table)),
            stream_leases_table(stream_leases_table_name(settings.cart_table)),
        ):
            created = await ensure_dynamodb_table(dynamodb, definition, TTL_ATTRIBUTE)
            done.append(
                f"dynamodb table {definition['TableName']}: {'created' if created else 'exists'}"
            )
    return done
