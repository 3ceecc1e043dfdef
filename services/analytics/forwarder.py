"""The bus forwarder: the mesh's domain events, from the EventBridge bus into the analytics
stream (issue 19 item 1).

An EventBridge rule on the bus (`DOMAIN_EVENTS_PATTERN`: the catalog's, the cart's and
the storefront's events) delivers to the SQS queue `cloudshelf-analytics-events`
(CLOUDSHELF_ANALYTICS_EVENTS_QUEUE, with its `-dlq`; services/analytics/provision.py),
since moto delivers EventBridge events to SQS targets, not to Kinesis ones. A background
task of the analytics server (the runtime's QueueConsumer) receives batches and puts each
event's `detail` (the envelope, as the producer wrote it, keeping its id) into the stream
in one PutRecords; the messages are deleted only after their records were accepted. A
message that holds no envelope is left to the queue's dead-letter redrive.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from cloudshelf.runtime.queues import MalformedMessage, QueueConsumer, QueueMessage
from services.analytics.records import MAX_RECORD_BYTES, encode
from services.analytics.stream_writer import StreamWriter, envelope_partition_key

EVENTS_QUEUE_ENV = "CLOUDSHELF_ANALYTICS_EVENTS_QUEUE"
DEFAULT_EVENTS_QUEUE = "cloudshelf-analytics-events"
DOMAIN_EVENT_SOURCES = ("cloudshelf.catalog", "cloudshelf.cart", "cloudshelf.storefront")
DOMAIN_EVENTS_PATTERN: dict[str, Any] = {"source": list(DOMAIN_EVENT_SOURCES)}


def events_queue(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get(EVENTS_QUEUE_ENV, "") or DEFAULT_EVENTS_QUEUE


def forwarded_envelope(message: QueueMessage) -> Mapping[str, Any]:
    """The envelope a message carries; MalformedMessage when it holds none the stream's
    consumers could use (records.decode's rules: an id, a type, an object for data)."""
    envelope = message.envelope()
    for name in ("id", "type"):
        if not isinstance(envelope.get(name), str) or not envelope[name]:
            raise MalformedMessage(f"the envelope has no {name}")
    if not isinstance(envelope.get("data", {}), dict):
        raise MalformedMessage("the envelope's data is not an object")
    if len(encode(envelope)) >= MAX_RECORD_BYTES:
        raise MalformedMessage("the envelope is larger than a Kinesis record")
    return envelope


class BusForwarder:
    def __init__(self, stream: StreamWriter) -> None:
        self.stream = stream

    async def forward(self, messages: Sequence[QueueMessage]) -> list[BaseException | None]:
        """One PutRecords for the batch's envelopes; a malformed message fails alone."""
        outcomes: list[BaseException | None] = [None] * len(messages)
        envelopes: list[Mapping[str, Any]] = []
        for position, message in enumerate(messages):
            try:
                envelope = forwarded_envelope(message)
            except MalformedMessage as exc:
                outcomes[position] = exc
                continue
            envelopes.append(envelope)
            message.span.set_attributes(
                {"cloudshelf.event.id": envelope["id"], "cloudshelf.event.type": envelope["type"]}
            )
        if envelopes:
            await self.stream.put(envelopes, [envelope_partition_key(e) for e in envelopes])
        return outcomes


def bus_forwarder(sqs: Any, stream: StreamWriter, queue: str | None = None) -> QueueConsumer:
    """The analytics server's background consumer of the domain-events queue."""
    forwarder = BusForwarder(stream)
    return QueueConsumer(
        sqs, queue or events_queue(), "analytics forward", handle_batch=forwarder.forward
    )
