"""GetHourlyMetrics and ListTopBooks: the figures, read from the warehouse.

A mixin of the AnalyticsService servicer (services/analytics/server.py): it needs
`self.pool`, the warehouse's connection pool.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
from google.protobuf.timestamp_pb2 import Timestamp

from cloudshelf.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from cloudshelf.common.v1 import common_pb2
from cloudshelf.runtime.currencies import CURRENCY_CODES
from cloudshelf.runtime.errors import InvalidArgument
from cloudshelf.runtime.rpc import ServicerContext
from services.analytics.metrics import HourlyMetrics, hourly_metrics, top_books

DEFAULT_TOP_BOOKS = 10
MAX_TOP_BOOKS = 100
# The longest ListTopBooks range: a bounded scan of the interactions.
MAX_TOP_BOOKS_RANGE = timedelta(days=366)
# Timestamps the warehouse can hold, with an hour to spare at the end: 0001-01-01 to
# 9999-12-31T23:00Z (protobuf's own range).
_MIN_SECONDS = -62135596800
_MAX_SECONDS = 253402297200 - 3600

INTERACTION_TYPES = {
    analytics_pb2.INTERACTION_TYPE_VIEW: "view",
    analytics_pb2.INTERACTION_TYPE_ADD_TO_CART: "add_to_cart",
    analytics_pb2.INTERACTION_TYPE_PURCHASE: "purchase",
    analytics_pb2.INTERACTION_TYPE_REVIEW: "review",
}


def check_instant(field: str, message: Timestamp, present: bool) -> datetime:
    """A required timestamp, inside the range the warehouse holds."""
    if not present:
        raise InvalidArgument(field, "is required")
    if not _MIN_SECONDS <= message.seconds <= _MAX_SECONDS or not 0 <= message.nanos < 10**9:
        raise InvalidArgument(field, "is out of range")
    return message.ToDatetime(tzinfo=UTC)


def check_currency(field: str, code: str) -> str:
    if code not in CURRENCY_CODES:
        raise InvalidArgument(
            field, "must be the ISO 4217 code of a circulating currency, upper case (e.g. EUR)"
        )
    return code


def _money(minor: int, currency: str) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor, currency_code=currency)


def hourly_metrics_message(metrics: HourlyMetrics, currency: str) -> analytics_pb2.HourlyMetrics:
    figures = metrics.in_currency(currency)
    message = analytics_pb2.HourlyMetrics(
        total_orders=figures.total_orders,
        total_revenue=_money(figures.total_revenue_minor, currency),
        average_order_value=_money(figures.average_order_value_minor, currency),
        conversion_rate=metrics.conversion_rate,
        top_categories=[
            analytics_pb2.CategoryRevenue(
                category_name=c.category_name,
                revenue=_money(c.revenue_minor, currency),
                order_items=c.order_items,
            )
            for c in figures.top_categories
        ],
    )
    message.hour_start.FromDatetime(metrics.hour_start)
    return message


class ReportHandlers(analytics_pb2_grpc.AnalyticsServiceServicer):
    pool: asyncpg.Pool

    async def GetHourlyMetrics(
        self, request: analytics_pb2.GetHourlyMetricsRequest, context: ServicerContext
    ) -> analytics_pb2.GetHourlyMetricsResponse:
        hour_start = check_instant("hour_start", request.hour_start, request.HasField("hour_start"))
        if request.hour_start.seconds % 3600 or request.hour_start.nanos:
            raise InvalidArgument(
                "hour_start", "must be on a whole hour in UTC (minutes, seconds and nanos 0)"
            )
        currency = check_currency("currency_code", request.currency_code)
        metrics = await hourly_metrics(self.pool, hour_start)
        return analytics_pb2.GetHourlyMetricsResponse(
            metrics=hourly_metrics_message(metrics, currency)
        )

    async def ListTopBooks(
        self, request: analytics_pb2.ListTopBooksRequest, context: ServicerContext
    ) -> analytics_pb2.ListTopBooksResponse:
        interaction_type = INTERACTION_TYPES.get(request.type)
        if interaction_type is None:
            raise InvalidArgument("type", "must be one of view, add to cart, purchase, review")
        start = check_instant("start_time", request.start_time, request.HasField("start_time"))
        end = check_instant("end_time", request.end_time, request.HasField("end_time"))
        if end <= start:
            raise InvalidArgument("end_time", "must be after start_time")
        if end - start > MAX_TOP_BOOKS_RANGE:
            raise InvalidArgument("end_time", "the range is at most 366 days")
        if not 0 <= request.limit <= MAX_TOP_BOOKS:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_TOP_BOOKS} (0: 10)")
        books = await top_books(
            self.pool, interaction_type, start, end, request.limit or DEFAULT_TOP_BOOKS
        )
        return analytics_pb2.ListTopBooksResponse(
            books=[
                analytics_pb2.TopBook(
                    book_id=b.book_id, title=b.title, interaction_count=b.interaction_count
                )
                for b in books
            ]
        )
