"""Reading the messages of the runtime's SQS consumer (cloudshelf/runtime/queues.py): the
envelope an EventBridge rule's message carries, and the trace it continues."""

from __future__ import annotations

import json

import pytest

from cloudshelf.runtime.queues import MalformedMessage, QueueMessage

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _message(body: str) -> QueueMessage:
    return QueueMessage.of({"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": body})


def test_the_envelope_is_the_events_detail_and_carries_its_trace() -> None:
    detail = {"id": "e-1", "type": "book.updated", "traceparent": TRACEPARENT, "data": {}}
    message = _message(json.dumps({"source": "cloudshelf.catalog", "detail": detail}))
    assert message.envelope() == detail
    assert message.trace_carrier() == {"traceparent": TRACEPARENT}


@pytest.mark.parametrize(
    "body", ["not json", "[1, 2]", json.dumps({"detail": "text"}), json.dumps({"no": "detail"})]
)
def test_a_body_without_an_envelope_is_malformed_and_continues_no_trace(body: str) -> None:
    message = _message(body)
    with pytest.raises(MalformedMessage):
        message.envelope()
    assert message.trace_carrier() == {}
