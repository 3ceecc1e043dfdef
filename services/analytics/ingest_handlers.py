"""RecordInteractions and RecordOrder: validated, then put into the analytics stream.

A mixin of the AnalyticsService servicer (services/analytics/server.py): it needs
`self.pool` (the warehouse, for request ids and recorded orders) and `self.stream`.

A request_id is claimed in a transaction that stays open while the records are put, and
completed in it: a retry waits for the first attempt and is answered with its response;
an attempt whose put failed rolls back and leaves no key. Should the commit fail after the
put, the retry puts the records again: the stream is at least once, the warehouse keys on
the envelope ids (interaction_id; the order's derived id).
"""

from __future__ import annotations

import asyncpg

from cloudshelf.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from cloudshelf.runtime.errors import AlreadyExists
from cloudshelf.runtime.idempotency import IdempotentCall, PostgresIdempotencyKeys
from cloudshelf.runtime.rpc import ServicerContext
from services.analytics.ingest import (
    check_interactions,
    check_order,
    interaction_envelopes,
    order_content_hash,
    order_envelope,
)
from services.analytics.stream_writer import StreamWriter

IDEMPOTENCY_KEYS = PostgresIdempotencyKeys("analytics.idempotency_keys")


class IngestHandlers(analytics_pb2_grpc.AnalyticsServiceServicer):
    pool: asyncpg.Pool
    stream: StreamWriter

    async def RecordInteractions(
        self, request: analytics_pb2.RecordInteractionsRequest, context: ServicerContext
    ) -> analytics_pb2.RecordInteractionsResponse:
        call = IdempotentCall.of("RecordInteractions", request)
        check_interactions(request)
        envelopes, keys = interaction_envelopes(request)
        response = analytics_pb2.RecordInteractionsResponse(accepted_count=len(envelopes))
        if call is None:
            await self.stream.put(envelopes, keys)
            return response
        async with self.pool.acquire() as conn, conn.transaction():
            stored = await IDEMPOTENCY_KEYS.claim(conn, call)
            if stored is not None:
                return analytics_pb2.RecordInteractionsResponse.FromString(stored)
            await self.stream.put(envelopes, keys)
            await IDEMPOTENCY_KEYS.complete(conn, call, response)
        return response

    async def RecordOrder(
        self, request: analytics_pb2.RecordOrderRequest, context: ServicerContext
    ) -> analytics_pb2.RecordOrderResponse:
        call = IdempotentCall.of("RecordOrder", request)
        check_order(request.order, request.HasField("order"))
        response = analytics_pb2.RecordOrderResponse()
        content_hash = order_content_hash(request.order)
        async with self.pool.acquire() as conn, conn.transaction():
            if call is not None:
                stored = await IDEMPOTENCY_KEYS.claim(conn, call)
                if stored is not None:
                    return analytics_pb2.RecordOrderResponse.FromString(stored)
            # A concurrent recording of the same order waits here on the uncommitted row.
            recorded = await conn.fetchval(
                "INSERT INTO analytics.recorded_orders (order_id, content_hash) "
                "VALUES ($1, $2) ON CONFLICT (order_id) DO NOTHING RETURNING true",
                request.order.order_id,
                content_hash,
            )
            if not recorded:
                earlier = await conn.fetchval(
                    "SELECT content_hash FROM analytics.recorded_orders WHERE order_id = $1",
                    request.order.order_id,
                )
                if bytes(earlier) != content_hash:
                    raise AlreadyExists(
                        "the order is already recorded with other content",
                        reason="ORDER_ALREADY_RECORDED",
                        metadata={"order_id": request.order.order_id},
                    )
            else:
                envelope, key = order_envelope(request.order)
                await self.stream.put([envelope], [key])
            if call is not None:
                await IDEMPOTENCY_KEYS.complete(conn, call, response)
        return response
