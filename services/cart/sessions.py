"""Browsing sessions in DynamoDB (the UserSessions table), converted to the session protos.

One item per session, keyed by `sessionId` (random, 128 bits). The session's credential is
`<sessionId>.<secret>` (256 random bits); only the SHA-256 of the secret is stored
(`secretHash`), so the table never holds what a client presents. `userId` is set when the
session is bound to a signed-in user (AuthenticateSession, MergeCarts): the UserIndex
(KEYS_ONLY) is sparse and lists exactly the bound sessions of each user.

Confidential client metadata (the seed's class): `ipAddress` is stored truncated to its
network (/24 IPv4, /48 IPv6; the stored value is what GetSession shows), `userAgent` and
`referrer` as the client sent them, capped. None of them is logged or put on spans here.

Every write adds to `version` (the session's etag) and is one conditional write: the
activity log is rewritten from the version read, conditioned on that version, so that two
racing TouchSession calls both land (one retries) and the log stays the last
MAX_ACTIVITY entries. `expiresAt` is 30 days after the last write (the seed's retention);
an item past it reads as absent before DynamoDB's TTL deletes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError

from cloudshelf.cart.v1 import cart_pb2
from cloudshelf.runtime.client_info import ClientInfo
from cloudshelf.runtime.errors import Aborted, NotFound
from cloudshelf.runtime.idempotency import DynamoDBIdempotencyKeys, IdempotentCall
from services.cart.store import _code, _from_dynamodb, _timestamp, is_live

# The seed's retention: a session expires 30 days after its last write.
SESSION_TTL = timedelta(days=30)
# TouchSession keeps this many activities, the newest; the oldest are dropped.
MAX_ACTIVITY = 50
USER_INDEX = "UserIndex"
# Rounds of read-and-conditional-write before a write gives up with ABORTED (only racing
# writes of one session retry).
MAX_ATTEMPTS = 32
# 128 bits of session id, 256 bits of secret (token_urlsafe: no "." in either).
SESSION_ID_BYTES = 16
SECRET_BYTES = 32
IPV4_PREFIX = 24
IPV6_PREFIX = 48

_serializer = TypeSerializer()


def new_session_id() -> str:
    return secrets.token_urlsafe(SESSION_ID_BYTES)


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def secret_hash(secret: str) -> bytes:
    """What is stored of a secret: its SHA-256 (the secret is random, so no salt or
    stretching is needed: there is nothing to guess)."""
    return hashlib.sha256(secret.encode()).digest()


def truncated_ip(address: str | None) -> str | None:
    """The client's network, not its address: a /24 for IPv4, a /48 for IPv6."""
    if not address:
        return None
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    prefix = IPV4_PREFIX if parsed.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{parsed}/{prefix}", strict=False))


def session_etag(item: dict[str, Any]) -> str:
    """The AIP-154 etag of a stored session: its id (never reused) and version."""
    digest = hashlib.sha256(f"{item['sessionId']}|{int(item.get('version', 0))}".encode())
    return f'W/"{digest.hexdigest()[:20]}"'


def session_from_item(item: dict[str, Any]) -> cart_pb2.Session:
    preferences = item.get("preferences") or {}
    session = cart_pb2.Session(
        session_id=str(item["sessionId"]),
        user_id=str(item.get("userId", "")),
        is_authenticated=bool(item.get("isAuthenticated", False)),
        ip_address=str(item.get("ipAddress", "")),
        user_agent=str(item.get("userAgent", "")),
        preferences=cart_pb2.Preferences(
            currency_code=str(preferences.get("currencyCode", "")),
            language=str(preferences.get("language", "")),
            theme=str(preferences.get("theme", "")),
        ),
        etag=session_etag(item),
    )
    for entry in item.get("activity") or []:
        activity = session.recent_activity.add(
            action=str(entry["action"]), details_json=str(entry.get("details", ""))
        )
        recorded = _timestamp(entry.get("at"))
        if recorded is not None:
            activity.time.CopyFrom(recorded)
    for field, attribute in (
        (session.create_time, "createdAt"),
        (session.last_access_time, "lastAccessedAt"),
    ):
        stamp = _timestamp(item.get(attribute))
        if stamp is not None:
            field.CopyFrom(stamp)
    session.expire_time.FromDatetime(datetime.fromtimestamp(int(item["expiresAt"]), UTC))
    return session


@dataclass(frozen=True)
class PreferencesValue:
    """Validated preferences; empty strings are unset."""

    currency_code: str
    language: str
    theme: str

    def stored(self) -> dict[str, str]:
        values = {"currencyCode": self.currency_code, "language": self.language}
        values["theme"] = self.theme
        return {name: value for name, value in values.items() if value}


@dataclass(frozen=True)
class ActivityValue:
    action: str
    # Compact JSON of an object, or "".
    details: str


def _not_found(session_id: str) -> NotFound:
    return NotFound(
        f"no live session {session_id}",
        reason="SESSION_NOT_FOUND",
        metadata={"session_id": session_id},
    )


def _stamp(now: int) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat()


def _serialized(values: dict[str, Any]) -> dict[str, Any]:
    return {name: _serializer.serialize(value) for name, value in values.items()}


class SessionStore:
    def __init__(self, client: Any, table: str, request_ids: DynamoDBIdempotencyKeys) -> None:
        self.client = client
        self.table = table
        self.request_ids = request_ids

    def key(self, session_id: str) -> dict[str, Any]:
        return {"sessionId": {"S": session_id}}

    async def read(self, session_id: str) -> dict[str, Any] | None:
        """The live session (consistent read); None when absent or expired."""
        answer = await self.client.get_item(
            TableName=self.table, Key=self.key(session_id), ConsistentRead=True
        )
        raw = answer.get("Item")
        item = None if raw is None else _from_dynamodb(raw)
        return item if is_live(item) else None

    async def live(self, session_id: str) -> dict[str, Any]:
        item = await self.read(session_id)
        if item is None:
            raise _not_found(session_id)
        return item

    async def create(
        self, preferences: PreferencesValue, client: ClientInfo, call: IdempotentCall | None
    ) -> tuple[cart_pb2.Session, str]:
        """A new session and its credential ("" for a retried request_id: the first answer
        is returned, and the credential is never stored)."""
        if call is not None:
            stored = await self.request_ids.claim([], call)
            if stored is not None:
                return cart_pb2.CreateSessionResponse.FromString(stored).session, ""
        session_id, secret = new_session_id(), new_secret()
        now = int(time.time())
        item: dict[str, Any] = {
            "sessionId": session_id,
            "secretHash": secret_hash(secret),
            "isAuthenticated": False,
            "preferences": preferences.stored(),
            "activity": [],
            "version": 1,
            "createdAt": _stamp(now),
            "lastAccessedAt": _stamp(now),
            "expiresAt": now + int(SESSION_TTL.total_seconds()),
        }
        confidential = {
            "ipAddress": truncated_ip(client.ip),
            "userAgent": client.user_agent,
            "referrer": client.referrer,
        }
        item.update({name: value for name, value in confidential.items() if value})
        put = {
            "TableName": self.table,
            "Item": _serialized(item),
            # 128 random bits never collide in practice; the condition makes sure of it.
            "ConditionExpression": "attribute_not_exists(sessionId)",
        }
        session = session_from_item(item)
        if call is None:
            await self.client.put_item(**put)
        else:
            # The stored answer (a retry's) is the session without its credential.
            transaction: list[dict[str, Any]] = [{"Put": put}]
            await self.request_ids.complete(
                transaction, call, cart_pb2.CreateSessionResponse(session=session)
            )
            try:
                await self.client.transact_write_items(TransactItems=transaction)
            except ClientError as exc:
                if _code(exc) != "TransactionCanceledException":
                    raise
                if not self.request_ids.key_condition_failed(exc, transaction):
                    raise
                # A concurrent attempt with the same request_id committed first.
                stored = await self.request_ids.claim([], call)
                if stored is None:
                    raise Aborted(
                        "a concurrent CreateSession with this request_id did not finish: retry",
                        reason="TRANSACTION_CONFLICT",
                    ) from exc
                return cart_pb2.CreateSessionResponse.FromString(stored).session, ""
        return session, f"{session_id}.{secret}"

    async def touch(self, session_id: str, activity: ActivityValue | None) -> cart_pb2.Session:
        """Appends the activity (keeping the last MAX_ACTIVITY) and extends the expiry."""

        def change(item: dict[str, Any], now: int) -> tuple[str, dict[str, Any]]:
            log = list(item.get("activity") or [])
            if activity is not None:
                entry = {"action": activity.action, "at": _stamp(now)}
                if activity.details:
                    entry["details"] = activity.details
                log.append(entry)
            return "SET activity = :log", {":log": log[-MAX_ACTIVITY:]}

        return await self._update(session_id, change, etag="")

    async def update_preferences(
        self, session_id: str, preferences: PreferencesValue, *, etag: str
    ) -> cart_pb2.Session:
        def change(item: dict[str, Any], now: int) -> tuple[str, dict[str, Any]]:
            return "SET preferences = :preferences", {":preferences": preferences.stored()}

        return await self._update(session_id, change, etag=etag)

    async def _update(
        self,
        session_id: str,
        change: Any,
        *,
        etag: str,
    ) -> cart_pb2.Session:
        """One conditional UpdateItem from the version read, again when a concurrent write
        of the session won."""
        for _ in range(MAX_ATTEMPTS):
            item = await self.live(session_id)
            if etag and session_etag(item) != etag:
                raise Aborted(
                    "the session changed since it was read (etag mismatch): read it again",
                    reason="ETAG_MISMATCH",
                )
            now = int(time.time())
            update, values = change(item, now)
            try:
                answer = await self.client.update_item(
                    TableName=self.table,
                    Key=self.key(session_id),
                    UpdateExpression=f"{update}, lastAccessedAt = :stamp, expiresAt = :expires "
                    "ADD version :one",
                    ConditionExpression="version = :read_version AND expiresAt > :now",
                    ExpressionAttributeValues=_serialized(
                        {
                            **values,
                            ":stamp": _stamp(now),
                            ":expires": now + int(SESSION_TTL.total_seconds()),
                            ":one": 1,
                            ":read_version": int(item.get("version", 0)),
                            ":now": now,
                        }
                    ),
                    ReturnValues="ALL_NEW",
                )
            except ClientError as exc:
                if _code(exc) != "ConditionalCheckFailedException":
                    raise
                continue  # a concurrent write (or the expiry) won: read again
            return session_from_item(_from_dynamodb(answer["Attributes"]))
        raise Aborted(
            "the session kept changing under this write: read it again and retry",
            reason="CONCURRENT_CHANGE",
        )

    def binding(self, item: dict[str, Any], subject: str, now: int) -> dict[str, Any]:
        """The TransactWriteItems entry that binds the session (as read) to a user."""
        return {
            "Update": {
                "TableName": self.table,
                "Key": self.key(str(item["sessionId"])),
                "UpdateExpression": "SET userId = :user, isAuthenticated = :true, "
                "lastAccessedAt = :stamp, expiresAt = :expires ADD version :one",
                # Unchanged since it was read: still unbound (or bound to this user), live.
                "ConditionExpression": "version = :read_version AND expiresAt > :now",
                "ExpressionAttributeValues": _serialized(
                    {
                        ":user": subject,
                        ":true": True,
                        ":stamp": _stamp(now),
                        ":expires": now + int(SESSION_TTL.total_seconds()),
                        ":one": 1,
                        ":read_version": int(item.get("version", 0)),
                        ":now": now,
                    }
                ),
            }
        }

    async def delete(self, session_id: str) -> None:
        now = int(time.time())
        try:
            await self.client.delete_item(
                TableName=self.table,
                Key=self.key(session_id),
                ConditionExpression="attribute_exists(sessionId) AND expiresAt > :now",
                ExpressionAttributeValues=_serialized({":now": now}),
            )
        except ClientError as exc:
            if _code(exc) != "ConditionalCheckFailedException":
                raise
            raise _not_found(session_id) from exc

    async def user_session_ids(
        self, subject: str, limit: int, after: str | None
    ) -> tuple[list[str], bool]:
        """Up to `limit` ids of the user's sessions from the UserIndex, after `after`, and
        whether more may follow."""
        arguments: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": USER_INDEX,
            "KeyConditionExpression": "userId = :user",
            "ExpressionAttributeValues": {":user": {"S": subject}},
            "Limit": limit,
        }
        if after is not None:
            arguments["ExclusiveStartKey"] = {
                "userId": {"S": subject},
                "sessionId": {"S": after},
            }
        answer = await self.client.query(**arguments)
        ids = [str(raw["sessionId"]["S"]) for raw in answer.get("Items", [])]
        return ids, "LastEvaluatedKey" in answer

    async def batch_read(self, session_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The live sessions among these ids (BatchGetItem, consistent), by id."""
        found: dict[str, dict[str, Any]] = {}
        keys = [self.key(session_id) for session_id in dict.fromkeys(session_ids)]
        for attempt in range(MAX_ATTEMPTS):
            if not keys:
                break
            answer = await self.client.batch_get_item(
                RequestItems={self.table: {"Keys": keys, "ConsistentRead": True}}
            )
            for raw in answer.get("Responses", {}).get(self.table, []):
                item = _from_dynamodb(raw)
                if is_live(item):
                    found[str(item["sessionId"])] = item
            keys = answer.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
            if keys:
                await asyncio.sleep(0.02 * (attempt + 1))  # throttled: back off a little
        if keys:
            raise Aborted("the session store is busy: retry", reason="UNPROCESSED_KEYS")
        return found


def activity_details(details_json: str, limit: int) -> str | None:
    """The compact form of a JSON object of at most `limit` bytes; None when it is not one."""
    if len(details_json.encode()) > limit:
        return None
    try:
        parsed = json.loads(details_json)
    except (ValueError, RecursionError):
        return None
    if not isinstance(parsed, dict):
        return None
    return json.dumps(parsed, separators=(",", ":"), ensure_ascii=False)
