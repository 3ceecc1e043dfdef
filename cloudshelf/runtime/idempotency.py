"""Idempotency keys (AIP-155 `request_id`): a retried write is applied once and answered
with the first response.

The contract, the same for every store that implements it:

- A key is a UUID (`check_request_id`), chosen by the client once per logical request and
  reused for its retries. It is optional: without one a write is simply not idempotent.
- A key belongs to a caller scope (`caller_scope`): the same UUID from two scopes is two
  keys, and a caller can never read another caller's stored response.
- It is stored with a hash of the canonical request (`request_hash`) and the serialized
  response proto, in the same transaction as the work. A retry with the same request gets
  those bytes back, exactly; the same key with a different request is refused
  (`RequestIdReused`).
- Only a successful request leaves a key. A request that fails (a validation error, a
  FAILED_PRECONDITION, a crash) rolls back with its work, so it can be retried with the
  same key, as AIP-155 expects of a failed request.
- A retry that arrives while the first attempt is still running waits for that attempt's
  outcome: its response if it committed, its turn to run if it failed.
- Keys are honoured for `DEFAULT_TTL` (7 days). An expired key counts as absent even before
  it is pruned; pruning (`prune_expired_keys`, run by a job) only reclaims space.

`PostgresIdempotencyKeys` implements it for services on PostgreSQL. A DynamoDB store (the
cart) follows the same `IdempotencyKeys` protocol with its transaction being the list of
TransactWriteItems being built: `claim` is a consistent GetItem (stored bytes, or None when
absent or expired, `RequestIdReused` on another hash), `complete` appends a Put of the key
item conditioned on `attribute_not_exists(pk) OR expiresAt <= :now` to the transaction, and
a transaction cancelled by that condition means a concurrent attempt won: `claim` again
returns its response. DynamoDB's own TTL deletes lazily (PITFALLS.md), hence the
`expiresAt` check in the condition and on reads.

Each PostgreSQL service creates its own table in its own migration, with this shape
(the catalog's is `book_catalog.idempotency_keys`, migration 202511104):

    CREATE TABLE <schema>.idempotency_keys (
        caller       TEXT NOT NULL,
        key          UUID NOT NULL,
        request_hash BYTEA NOT NULL,
        response     BYTEA,               -- NULL only inside the transaction that runs it
        created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
        expires_at   TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (caller, key)
    );
    CREATE INDEX ON <schema>.idempotency_keys (expires_at);
"""

from __future__ import annotations

import contextvars
import hashlib
import re
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import asyncpg
from google.protobuf.message import Message

from cloudshelf.runtime.errors import FailedPrecondition, InvalidArgument

DEFAULT_TTL = timedelta(days=7)
# Rows deleted per statement when pruning: short transactions, no long lock on the table.
PRUNE_BATCH = 5_000

_UUID_TEXT = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

# The authenticated principal of the current call (the token's `sub`; None for an
# anonymous caller), set by the auth interceptor (cloudshelf/runtime/auth.py) for every
# call: every key is scoped by it.
current_principal: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_principal", default=None
)


class RequestIdReused(FailedPrecondition):
    """The key is already stored for a different request.

    FAILED_PRECONDITION rather than INVALID_ARGUMENT: the same request_id is valid in
    itself, and would be accepted from another caller, after the key expires, or if the
    earlier attempt had failed; it is refused because of what the server already holds
    under it, which is the line google.rpc.Code draws between the two codes. AIP-155 names
    no code. Either way the client must not retry it as is: a new request needs a new id.
    """

    def __init__(self) -> None:
        super().__init__(
            "request_id reused with a different request: a retry must repeat the first "
            "request exactly; send a new request_id for a new request",
            reason="REQUEST_ID_REUSED",
        )


def check_request_id(field: str, value: str) -> uuid.UUID | None:
    """The key a request carries, or None when it carries none (the field is optional).

    Only the canonical text form (8-4-4-4-12 hex digits, any version, any case) is accepted;
    keys differing only in case are the same key. The nil UUID is refused: it is what an
    unset UUID variable prints, and every such client would share one key.
    """
    if not value:
        return None
    if not _UUID_TEXT.fullmatch(value):
        raise InvalidArgument(field, "must be a UUID (e.g. a random UUID4), 36 characters")
    key = uuid.UUID(value)
    if key.int == 0:
        raise InvalidArgument(field, "must not be the nil UUID")
    return key


def caller_scope(rpc: str) -> str:
    """The scope a key lives in: the RPC, plus the caller's principal when there is one.

    `current_principal` holds the verified caller's subject (an end user's `sub`, or the
    calling service's identity) and the scope is "<rpc> <principal>": two callers sending
    the same UUID hold two keys, and one caller can never be answered with the response
    stored for another. An anonymous caller's scope is the RPC name alone (UUIDs keep
    their keys apart), unless the service knows the caller otherwise and sets
    `current_principal` itself: the cart sets `session#<id>` for an anonymous session's
    cart writes (services/cart/owners.py). CreateSession's keys are in the RPC's scope.
    """
    principal = current_principal.get()
    return f"{rpc} {principal}" if principal else rpc


def request_hash(request: Message, key_field: str = "request_id") -> bytes:
    """SHA-256 of the request in a canonical form, without its idempotency key.

    Canonical: the message as this server parsed it (so the order fields came in on the
    wire does not matter), without unknown fields (a newer client's fields that this server
    ignores anyway), serialized deterministically, prefixed by the message type. Equal
    hashes mean the server would do the same work. The hash depends on the protobuf
    encoder, which is stable in practice; a change would only refuse retries in flight
    across the upgrade, never apply one twice.
    """
    canonical = type(request)()
    canonical.CopyFrom(request)
    canonical.ClearField(key_field)
    canonical.DiscardUnknownFields()
    digest = hashlib.sha256(request.DESCRIPTOR.full_name.encode())
    digest.update(b"\0")
    digest.update(canonical.SerializeToString(deterministic=True))
    return digest.digest()


@dataclass(frozen=True)
class IdempotentCall:
    """One call that carries a key: who sent it, the key, and what it asked for."""

    caller: str
    key: uuid.UUID
    request_hash: bytes

    @classmethod
    def of(cls, rpc: str, request: Message, key_field: str = "request_id") -> IdempotentCall | None:
        """The call's key, validated, in the scope of `rpc`; None when it carries none."""
        key = check_request_id(key_field, getattr(request, key_field))
        if key is None:
            return None
        return cls(caller_scope(rpc), key, request_hash(request, key_field))


Transaction = TypeVar("Transaction", contravariant=True)


class IdempotencyKeys(Protocol[Transaction]):
    """What a service's write does with a key, in the transaction that does the work.

    `claim` first: stored response bytes mean "answer with these and do nothing"; None means
    "do the work, then `complete`". Whatever the store, a concurrent attempt with the same
    key never runs the work a second time.
    """

    async def claim(self, transaction: Transaction, call: IdempotentCall) -> bytes | None: ...

    async def complete(
        self, transaction: Transaction, call: IdempotentCall, response: Message
    ) -> None: ...


class PostgresIdempotencyKeys:
    """Keys in one PostgreSQL table (the shape is in the module docstring).

    `claim` inserts the key row at the start of the work's transaction, so the primary key
    itself is the lock: a concurrent attempt's insert waits on the uncommitted row until the
    first transaction ends, then finds the stored response (committed) or takes the key
    (rolled back: a failed attempt leaves nothing). Runs under READ COMMITTED, the default.
    Take the key before any other lock of the transaction so that waiting on it holds
    nothing else.
    """

    def __init__(self, table: str, ttl: timedelta = DEFAULT_TTL) -> None:
        self.table = table
        self.ttl = ttl

    async def claim(self, transaction: asyncpg.Connection, call: IdempotentCall) -> bytes | None:
        while True:
            # A new key, or an expired one not pruned yet: ours, the work goes ahead.
            taken = await transaction.fetchval(
                f"INSERT INTO {self.table} AS k (caller, key, request_hash, expires_at) "
                "VALUES ($1, $2, $3, now() + $4::interval) "
                "ON CONFLICT (caller, key) DO UPDATE "
                "SET request_hash = EXCLUDED.request_hash, response = NULL, "
                "    created_at = now(), expires_at = EXCLUDED.expires_at "
                "WHERE k.expires_at <= now() "
                "RETURNING true",
                call.caller,
                call.key,
                call.request_hash,
                self.ttl,
            )
            if taken:
                return None
            earlier = await transaction.fetchrow(
                f"SELECT request_hash, response FROM {self.table} WHERE caller = $1 AND key = $2",
                call.caller,
                call.key,
            )
            if earlier is None:
                continue  # pruned just after it expired: claim it afresh
            if bytes(earlier["request_hash"]) != call.request_hash:
                raise RequestIdReused()
            if earlier["response"] is None:
                raise RuntimeError(f"{self.table}: a key was committed without complete()")
            return bytes(earlier["response"])

    async def complete(
        self, transaction: asyncpg.Connection, call: IdempotentCall, response: Message
    ) -> None:
        await transaction.execute(
            f"UPDATE {self.table} SET response = $3 WHERE caller = $1 AND key = $2",
            call.caller,
            call.key,
            response.SerializeToString(deterministic=True),
        )


async def prune_expired_keys(pool: asyncpg.Pool, table: str, batch: int = PRUNE_BATCH) -> int:
    """Deletes the expired keys of `table`, a batch per transaction; returns how many.

    Every service's prune job calls this with its own table; expired keys are already
    ignored by `claim`, so when this runs changes nothing but the table's size.
    """
    pruned = 0
    while True:
        status = await pool.execute(
            f"DELETE FROM {table} WHERE (caller, key) IN ("
            f"  SELECT caller, key FROM {table} WHERE expires_at <= now() "
            "  ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)",
            batch,
        )
        deleted = int(status.split()[-1])
        pruned += deleted
        if deleted < batch:
            return pruned


class DynamoDBIdempotencyKeys:
    """Keys in one DynamoDB table (hash key `pk`, TTL on `expiresAt`), for services on DynamoDB.

    The "transaction" is the list of TransactWriteItems the work is building: `claim` reads
    the key (consistent GetItem), `complete` appends a Put of the key with the response,
    conditioned on the key still being absent or expired. The caller runs the transaction
    and, when it is cancelled by that condition (`key_condition_failed`: a concurrent
    attempt with the same key committed first), calls `claim` again, which then answers
    with that attempt's response (or refuses a different request). The work and the key
    commit together or not at all: a failed request leaves no key.
    """

    def __init__(self, client: Any, table: str, ttl: timedelta = DEFAULT_TTL) -> None:
        self.client = client
        self.table = table
        self.ttl = ttl

    @staticmethod
    def definition(table: str) -> dict[str, Any]:
        """The key table's CreateTable arguments (TTL on `expiresAt` is set by provisioning)."""
        return {
            "TableName": table,
            "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
            "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
            "BillingMode": "PAY_PER_REQUEST",
        }

    @staticmethod
    def _pk(call: IdempotentCall) -> str:
        return f"{call.caller}|{call.key}"

    async def claim(self, transaction: list[dict[str, Any]], call: IdempotentCall) -> bytes | None:
        answer = await self.client.get_item(
            TableName=self.table, Key={"pk": {"S": self._pk(call)}}, ConsistentRead=True
        )
        item = answer.get("Item")
        # DynamoDB deletes expired items lazily: an expired key counts as absent.
        if item is None or int(item["expiresAt"]["N"]) <= int(time.time()):
            return None
        if bytes(item["requestHash"]["B"]) != call.request_hash:
            raise RequestIdReused()
        return bytes(item["response"]["B"])

    async def complete(
        self, transaction: list[dict[str, Any]], call: IdempotentCall, response: Message
    ) -> None:
        now = int(time.time())
        transaction.append(
            {
                "Put": {
                    "TableName": self.table,
                    "Item": {
                        "pk": {"S": self._pk(call)},
                        "requestHash": {"B": call.request_hash},
                        "response": {"B": response.SerializeToString(deterministic=True)},
                        "expiresAt": {"N": str(now + int(self.ttl.total_seconds()))},
                    },
                    "ConditionExpression": "attribute_not_exists(pk) OR expiresAt <= :now",
                    "ExpressionAttributeValues": {":now": {"N": str(now)}},
                }
            }
        )

    def key_condition_failed(self, error: Exception, transaction: list[dict[str, Any]]) -> bool:
        """Whether a cancelled TransactWriteItems was cancelled by this key's condition."""
        reasons = cancellation_reasons(error)
        for index, entry in enumerate(transaction):
            put = entry.get("Put", {})
            if put.get("TableName") == self.table and index < len(reasons):
                return reasons[index] == "ConditionalCheckFailed"
        return False


def cancellation_reasons(error: Exception) -> list[str]:
    """The per-item reason codes of a TransactionCanceledException ("None" where it passed)."""
    response = getattr(error, "response", {}) or {}
    reasons = response.get("CancellationReasons")
    if reasons:
        return [str(reason.get("Code", "None")) for reason in reasons]
    # Some emulators put them only in the message: "... [None, ConditionalCheckFailed]".
    message = str(response.get("Error", {}).get("Message", ""))
    if "[" in message and message.endswith("]"):
        return [part.strip() for part in message[message.rindex("[") + 1 : -1].split(",")]
    return []
