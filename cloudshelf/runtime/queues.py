"""One SQS consumer of the bus's events, for every service that takes events from a queue
an EventBridge rule fills (the cart's price changes, the catalog's order events, the
analytics forwarder).

`QueueConsumer.run` long-polls the queue until stopped or cancelled:
- idle polls run with instrumentation suppressed (no root span per empty receive);
- each message received gets a CONSUMER span continuing the trace of the envelope it
  carries (the EventBridge event's `detail.traceparent`), with its outcome in
  `cloudshelf.message.outcome`: "deleted", "failed" (it comes back after the visibility
  timeout) or "malformed";
- while the handler works, the messages' visibility is renewed every half of the
  visibility timeout, so a slow handler's message is not handed to another consumer;
- a message is deleted only after its handler succeeded;
- a handler that raises `MalformedMessage` marks a poison message: it is made visible
  again at once, and SQS's redrive moves it to the dead-letter queue after
  maxReceiveCount receives (`ensure_queue` sets the redrive);
- failures of SQS itself back the loop off exponentially (with jitter) up to max_backoff;
- `stop()` ends the loop after the batch in hand (no message is cut off mid-handling).

A handler takes either one message (`handle_each`: the messages of a receive run
concurrently, each inside its own span) or the whole batch (`handle_batch`, e.g. one
Kinesis PutRecords for all of them, in a "<name> batch" span; it answers one outcome per
message).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cloudshelf.runtime.config import env_int

log = logging.getLogger("cloudshelf.queues")

_TRACE_CONTEXT = TraceContextTextMapPropagator()
# Span attribute: what became of the message ("deleted", "failed", "malformed").
OUTCOME = "cloudshelf.message.outcome"
# SQS: at most 10 messages per receive, per batch call.
MAX_MESSAGES = 10


class MalformedMessage(ValueError):
    """A message that no retry can make readable. Its text names what is wrong, never a
    value from the message (which may hold personal data)."""


@dataclass
class QueueMessage:
    message_id: str
    receipt_handle: str
    body: str
    # The EventBridge event the body holds (None when the body is not a JSON object).
    event: Mapping[str, Any] | None
    span: Span = field(default_factory=lambda: trace.INVALID_SPAN)

    @classmethod
    def of(cls, message: Mapping[str, Any]) -> QueueMessage:
        body = str(message.get("Body", ""))
        try:
            event = json.loads(body)
        except (ValueError, RecursionError):
            event = None
        return cls(
            str(message.get("MessageId", "")),
            str(message["ReceiptHandle"]),
            body,
            event if isinstance(event, dict) else None,
        )

    def envelope(self) -> Mapping[str, Any]:
        """The event's `detail`: the envelope the producer published; MalformedMessage
        when there is none."""
        if self.event is None:
            raise MalformedMessage("the body is not a JSON object")
        detail = self.event.get("detail")
        if not isinstance(detail, dict):
            raise MalformedMessage("no EventBridge `detail` object")
        return detail

    def trace_carrier(self) -> dict[str, str]:
        detail = self.event.get("detail") if self.event is not None else None
        if not isinstance(detail, dict):
            return {}
        return {
            name: detail[name]
            for name in ("traceparent", "tracestate")
            if isinstance(detail.get(name), str) and detail[name]
        }


# One message: raise MalformedMessage for a poison message, anything else to retry it.
EachHandler = Callable[[QueueMessage], Awaitable[None]]
# A batch: one outcome per message, in order (None: handled; an exception otherwise).
BatchHandler = Callable[[Sequence[QueueMessage]], Awaitable[Sequence[BaseException | None]]]


@dataclass(frozen=True)
class ConsumerPolicy:
    # Long poll of one receive; below the AWS client's read timeout (10 s).
    wait_seconds: int = 5
    # Seconds a received message stays hidden from the other consumers; renewed every
    # half of it while its handler runs.
    visibility_timeout: int = 60
    # Longest pause of the loop while SQS fails.
    max_backoff: float = 30.0
    max_messages: int = MAX_MESSAGES

    @classmethod
    def from_env(
        cls, visibility_env: str, environ: Mapping[str, str] | None = None
    ) -> ConsumerPolicy:
        """The policy with its visibility timeout from `visibility_env` (whole seconds, at
        least 1)."""
        visibility = env_int(visibility_env, cls.visibility_timeout, environ)
        if visibility < 1:
            raise ValueError(f"{visibility_env} must be at least 1, got {visibility}")
        return cls(visibility_timeout=visibility)


class QueueConsumer:
    """Consumes one queue (see the module's docstring). `name` names the spans
    ("<name> process") and the log lines."""

    def __init__(
        self,
        sqs: Any,
        queue_name: str,
        name: str,
        *,
        handle_each: EachHandler | None = None,
        handle_batch: BatchHandler | None = None,
        policy: ConsumerPolicy | None = None,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        if (handle_each is None) == (handle_batch is None):
            raise ValueError("give exactly one of handle_each and handle_batch")
        self.sqs = sqs
        self.queue_name = queue_name
        self.name = name
        self.handle_each = handle_each
        self.handle_batch = handle_batch
        self.policy = policy or ConsumerPolicy()
        self._queue_url: str | None = None
        self._stopping = asyncio.Event()
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)

    def stop(self) -> None:
        """Ends `run` after the batch in hand."""
        self._stopping.set()

    async def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                await self.receive_once()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning(
                    "%s: receiving failed (%s), retrying",
                    self.name,
                    type(exc).__name__,
                    extra={"queue": self.queue_name},
                )
                delay = min(2.0**failures, self.policy.max_backoff)
                try:
                    await asyncio.wait_for(self._stopping.wait(), delay * random.uniform(0.5, 1.0))
                except TimeoutError:
                    pass

    async def queue_url(self) -> str:
        if self._queue_url is None:
            answer = await self.sqs.get_queue_url(QueueName=self.queue_name)
            self._queue_url = str(answer["QueueUrl"])
        return self._queue_url

    async def receive_once(self) -> int:
        """One long poll; handles what it received. Returns how many messages came."""
        with suppress_instrumentation():  # an idle poll leaves no trace
            url = await self.queue_url()
            answer = await self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=self.policy.max_messages,
                WaitTimeSeconds=self.policy.wait_seconds,
                VisibilityTimeout=self.policy.visibility_timeout,
            )
        messages = [QueueMessage.of(message) for message in answer.get("Messages", [])]
        if messages:
            await self.handle(messages)
        return len(messages)

    async def handle(self, messages: Sequence[QueueMessage]) -> None:
        """Runs the handler over the messages, each in its span, then deletes, releases
        or leaves each one by its outcome. Never raises for a handler's failure."""
        for message in messages:
            # Continues the producer's trace: e.g. catalog UpdateBook -> relay -> here.
            message.span = self._tracer.start_span(
                f"{self.name} process",
                context=_TRACE_CONTEXT.extract(message.trace_carrier()) or Context(),
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "aws_sqs",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": self.queue_name,
                    "messaging.message.id": message.message_id,
                },
            )
        renewal = asyncio.create_task(self._keep_hidden(messages))
        try:
            outcomes = await self._outcomes(messages)
        finally:
            renewal.cancel()
        for message, outcome in zip(messages, outcomes, strict=True):
            with trace.use_span(message.span, end_on_exit=True):
                await self._settle(message, outcome)

    async def _outcomes(self, messages: Sequence[QueueMessage]) -> list[BaseException | None]:
        if self.handle_each is not None:
            each = self.handle_each

            async def one(message: QueueMessage) -> BaseException | None:
                with trace.use_span(message.span, end_on_exit=False):
                    try:
                        await each(message)
                    except Exception as exc:
                        return exc
                return None

            return list(await asyncio.gather(*(one(message) for message in messages)))
        assert self.handle_batch is not None
        # One root span for the batch's own calls (e.g. one PutRecords). Not linked to the
        # producers' traces: each message's span already continues its own.
        with self._tracer.start_as_current_span(
            f"{self.name} batch",
            context=Context(),
            attributes={"messaging.batch.message_count": len(messages)},
        ):
            try:
                outcomes = list(await self.handle_batch(messages))
            except Exception as exc:  # the batch failed as a whole: every message comes back
                return [exc] * len(messages)
        if len(outcomes) != len(messages):
            error = RuntimeError(f"{len(outcomes)} outcomes for {len(messages)} messages")
            return [error] * len(messages)
        return outcomes

    async def _settle(self, message: QueueMessage, outcome: BaseException | None) -> None:
        span = message.span
        if isinstance(outcome, MalformedMessage):
            span.set_attribute(OUTCOME, "malformed")
            span.set_status(Status(StatusCode.ERROR, str(outcome)))
            log.error(
                "%s: message %s is malformed (%s): left for the dead-letter queue",
                self.name,
                message.message_id,
                outcome,
                extra={"queue": self.queue_name},
            )
            await self._release(message)
            return
        if outcome is None:
            try:
                await self.sqs.delete_message(
                    QueueUrl=await self.queue_url(), ReceiptHandle=message.receipt_handle
                )
                span.set_attribute(OUTCOME, "deleted")
                return
            except Exception as exc:
                outcome = exc
        span.set_attribute(OUTCOME, "failed")
        span.set_status(Status(StatusCode.ERROR, type(outcome).__name__))
        log.warning(
            "%s: message %s not handled (%s): it comes back after the visibility timeout",
            self.name,
            message.message_id,
            type(outcome).__name__,
            extra={"queue": self.queue_name},
        )

    async def _keep_hidden(self, messages: Sequence[QueueMessage]) -> None:
        """Renews the messages' visibility timeout every half of it, until cancelled."""
        while True:
            await asyncio.sleep(self.policy.visibility_timeout / 2)
            try:
                with suppress_instrumentation():
                    await self.sqs.change_message_visibility_batch(
                        QueueUrl=await self.queue_url(),
                        Entries=[
                            {
                                "Id": str(position),
                                "ReceiptHandle": message.receipt_handle,
                                "VisibilityTimeout": self.policy.visibility_timeout,
                            }
                            for position, message in enumerate(messages)
                        ],
                    )
            except Exception as exc:  # another consumer may get it: handlers are idempotent
                log.warning("%s: could not renew visibility (%s)", self.name, type(exc).__name__)

    async def _release(self, message: QueueMessage) -> None:
        """Makes a malformed message visible again at once: it reaches the dead-letter
        queue after maxReceiveCount receives instead of as many visibility timeouts."""
        try:
            await self.sqs.change_message_visibility(
                QueueUrl=await self.queue_url(),
                ReceiptHandle=message.receipt_handle,
                VisibilityTimeout=0,
            )
        except Exception as exc:  # it comes back after the visibility timeout instead
            log.warning(
                "%s: could not release a malformed message (%s)", self.name, type(exc).__name__
            )
