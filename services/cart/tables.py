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


def request_ids_table_name(cart_table: str) -> str:
    """The table of the cart's AIP-155 request ids (the runtime's DynamoDB idempotency keys)."""
    return f"{cart_table}-RequestIds"


def request_ids_table(name: str) -> dict[str, Any]:
    return DynamoDBIdempotencyKeys.definition(name)


def book_holders_table_name(cart_table: str) -> str:
    """The index of which owners' carts hold a book (pk bookId, sk owner), kept from the
    cart table's stream by the stream processor."""
    return f"{cart_table}-BookHolders"


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
