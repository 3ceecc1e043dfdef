"""The cart context's DynamoDB tables, after the seed's design."""

from __future__ import annotations

from typing import Any

from cloudshelf.runtime.idempotency import DynamoDBIdempotencyKeys

# The cart of a user is keyed (userId "user#<sub>", "current"); an anonymous cart will be
# keyed by its session as userId "session#<id>" and also carry sessionId for the
# SessionIndex. The prefixes keep the two apart: a user whose id is "session#abc" is not
# session abc.
CURRENT_CART = "current"
USER_OWNER_PREFIX = "user#"
SESSION_OWNER_PREFIX = "session#"
TTL_ATTRIBUTE = "expiresAt"

# What the stream processor (services/cart/stream.py) reads from the images of a cart item.
# Every write of a cart SETs TRACEPARENT and TRACESTATE (the writing request's W3C trace
# context, "" when there is none: store.trace_context_values) and LAST_OPERATION (the RPC
# that wrote it, e.g. "ClearCart"), so the events carry the producing request's trace.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
LAST_OPERATION = "lastOperation"
# The merge of a session's cart into a user's cart (AuthenticateSession, MergeCarts) SETs on
# the user's cart `lastMerge` = {"sessionId": <the session id>, "mergeId": <a UUID, new for
# every merge>} in its TransactWriteItems, beside the session cart's tombstone: a record
# of a cart whose lastMerge differs between its old and new image is a merge (one
# cart.merged event, no per-line events).
LAST_MERGE = "lastMerge"
# The same transaction replaces the session's cart (or its absence) with a tombstone: no
# lines, `mergedInto` = the user's owner key, expiring after MERGED_TOMBSTONE_TTL. A write
# to the session's cart that was let in before the merge bound the session (its owner
# resolved, its cart read) then fails its condition instead of making a cart nobody will
# merge; the tombstone's record publishes nothing (cart.merged on the user's cart says it).
MERGED_INTO = "mergedInto"
# On a line: the catalog's stock the write saw (AddItem always; UpdateItemQuantity when it
# checks the stock, removed otherwise), for the inventory.low event.
STOCK_SEEN = "stockSeen"


def request_ids_table_name(cart_table: str) -> str:
    """The table of the cart's AIP-155 request ids (the runtime's DynamoDB idempotency keys)."""
    return f"{cart_table}-RequestIds"


def request_ids_table(name: str) -> dict[str, Any]:
    return DynamoDBIdempotencyKeys.definition(name)


def book_holders_table_name(cart_table: str) -> str:
    """The index of the carts holding each book, kept by the stream processor and read by
    price-change notifications."""
    return f"{cart_table}-BookHolders"


def book_holders_table(name: str) -> dict[str, Any]:
    """bookId (S, the decimal book id) HASH, owner (S, the cart's owner key "user#<sub>" or
    "session#<id>") RANGE; `expiresAt` (N, TTL): the cart's expiry rounded up to a whole
    day (UTC), so a row never expires before its cart and outlives it by less than a day.
    Query by bookId for the owners of the carts holding the book (filter expiresAt > now:
    TTL deletes lazily). Kept by the stream processor (services/cart/stream.py): it lags
    the carts by the stream's delay (about a second)."""
    return {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": "bookId", "KeyType": "HASH"},
            {"AttributeName": "owner", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "bookId", "AttributeType": "S"},
            {"AttributeName": "owner", "AttributeType": "S"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


def stream_leases_table_name(cart_table: str) -> str:
    """The stream processor's shard leases and checkpoints."""
    return f"{cart_table}-StreamLeases"


def stream_leases_table(name: str) -> dict[str, Any]:
    """shardId (S) HASH; leaseOwner, leaseExpiresAt (epoch seconds), checkpoint (the last
    sequence number whose events were published, or "SHARD_END"), parentShardId; a finished
    shard's row expires (TTL expiresAt) after the stream's 24 h retention has passed."""
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": "shardId", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "shardId", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


def notifications_table_name(cart_table: str) -> str:
    """The owners' in-app notifications (price changes of books in their carts)."""
    return f"{cart_table}-Notifications"


def notifications_table(name: str) -> dict[str, Any]:
    # One partition per owner key ("user#<sub>" / "session#<id>"); the sort key starts
    # with the time of the change, so a Query reads newest first.
    return {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": "owner", "KeyType": "HASH"},
            {"AttributeName": "notificationId", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "owner", "AttributeType": "S"},
            {"AttributeName": "notificationId", "AttributeType": "S"},
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }


def cart_table(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "KeySchema": [
            {"AttributeName": "userId", "KeyType": "HASH"},
            {"AttributeName": "cartId", "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": "userId", "AttributeType": "S"},
            {"AttributeName": "cartId", "AttributeType": "S"},
            {"AttributeName": "sessionId", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "SessionIndex",
                "KeySchema": [{"AttributeName": "sessionId", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "ALL"},
            }
        ],
        "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        "BillingMode": "PAY_PER_REQUEST",
    }


def sessions_table(name: str) -> dict[str, Any]:
    return {
        "TableName": name,
        "KeySchema": [{"AttributeName": "sessionId", "KeyType": "HASH"}],
        "AttributeDefinitions": [
            {"AttributeName": "sessionId", "AttributeType": "S"},
            {"AttributeName": "userId", "AttributeType": "S"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": "UserIndex",
                "KeySchema": [{"AttributeName": "userId", "KeyType": "HASH"}],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        "BillingMode": "PAY_PER_REQUEST",
    }
