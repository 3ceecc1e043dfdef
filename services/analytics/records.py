"""The analytics log's record format: what goes into the Kinesis stream and comes out.

Every record is one event in the mesh's one envelope (`cloudshelf.common.v1.EventEnvelope`)
in its JSON form, UTF-8, exactly as the event bus carries it in an EventBridge event's
`detail` (`cloudshelf.runtime.events.Event.envelope`): proto field names, `data` a JSON
object. Interactions recorded through RecordInteractions are envelopes too (type
`interaction.recorded`, id = the interaction_id); domain events forwarded from the bus keep
the id their producer gave them. Consumers de-duplicate by envelope id: the stream delivers
at least once.

The partition key keeps one visitor's events in order on one shard: the user, else the
session, else the envelope's subject.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

# Kinesis caps: a partition key is 1..256 Unicode characters, a record's data 1 MiB.
MAX_PARTITION_KEY = 256
MAX_RECORD_BYTES = 1024 * 1024


class MalformedRecord(ValueError):
    """A record that is not an envelope the pipeline can use; the reason goes to the dead
    letters with the record."""


@dataclass(frozen=True)
class StreamEvent:
    """One envelope read from one shard."""

    # The EventEnvelope's JSON form (proto field names); `data` is a JSON object.
    envelope: Mapping[str, Any]
    shard_id: str
    sequence_number: str
    # Kinesis' ApproximateArrivalTimestamp: when the record entered the stream.
    arrival: datetime

    @property
    def id(self) -> str:
        return str(self.envelope["id"])

    @property
    def type(self) -> str:
        return str(self.envelope["type"])

    @property
    def data(self) -> Mapping[str, Any]:
        data = self.envelope.get("data") or {}
        return data if isinstance(data, Mapping) else {}


class Sink(Protocol):
    """Where the consumer writes a batch of events it read. A sink must be idempotent per
    event id: after a crash the consumer re-reads from its last checkpoint and writes again."""

    async def write(self, events: Sequence[StreamEvent]) -> None: ...


def encode(envelope: Mapping[str, Any]) -> bytes:
    """A record's data: the envelope's compact JSON (non-ASCII kept as UTF-8)."""
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def decode(data: bytes, shard_id: str, sequence_number: str, arrival: datetime) -> StreamEvent:
    """The event a record holds; MalformedRecord when it is not an envelope with an id, a
    type and an object for data."""
    try:
        envelope = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedRecord(f"not JSON: {exc}") from exc
    if not isinstance(envelope, dict):
        raise MalformedRecord("not a JSON object")
    for field in ("id", "type"):
        if not isinstance(envelope.get(field), str) or not envelope[field]:
            raise MalformedRecord(f"envelope without a {field}")
    if not isinstance(envelope.get("data", {}), dict):
        raise MalformedRecord("envelope data is not an object")
    return StreamEvent(envelope, shard_id, sequence_number, arrival)


def partition_key(user_id: str, session_id: str, subject: str) -> str:
    """The user, else the session, else the subject (never empty: Kinesis refuses it)."""
    key = user_id or session_id or subject or "-"
    return key[:MAX_PARTITION_KEY]
