"""Hourly metrics from the warehouse: the seed's generateHourlyMetrics, on the facts.

For one hour [hour_start, hour_start + 1 h) in UTC:
- total orders and total revenue: the orders *placed* in the hour (fact_orders by
  order_timestamp), whatever their later status, per currency (amounts are never
  converted nor summed across currencies);
- average order value: total revenue / orders, rounded half up to the minor unit;
- top categories: revenue (fact_order_lines.revenue_minor) and copies per category of
  those orders, per currency, the TOP_CATEGORIES best by revenue (ties by name); a line
  whose category is unknown counts under "unknown";
- conversion rate: the hour's orders, in every currency, over the distinct sessions with
  a view in the hour (as the proto says); a view recorded without a session counts its
  user as the session. 0 when there was no view; above 1 is possible (orders whose
  sessions viewed nothing in that hour).

The job (`cloudshelf job hourly-metrics`) stores them in analytics.hourly_metrics and
analytics.hourly_metrics_by_currency (replacing the hour's rows) and writes the same
figures as JSON to S3 at the seed's key hourly-metrics/YYYY/M/D/H.json (UTC, no zero
padding); the JSON is written with sorted keys, so re-running an hour over the same facts
writes the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

HOUR = timedelta(hours=1)
TOP_CATEGORIES = 5
UNKNOWN_CATEGORY = "unknown"

# The hourly queries ($1, $2: the hour's bounds), named for bench/analytics_metrics.py.
ORDERS_IN_HOUR = """
    SELECT currency, count(*) AS orders, sum(total_amount_minor)::bigint AS revenue
    FROM analytics.fact_orders
    WHERE order_timestamp >= $1 AND order_timestamp < $2
    GROUP BY currency
"""
SESSIONS_WITH_VIEW = """
    SELECT count(DISTINCT COALESCE(session_id, 'user#' || user_id))
    FROM analytics.fact_book_interactions
    WHERE interaction_type = 'view'
      AND interaction_timestamp >= $1 AND interaction_timestamp < $2
      AND (session_id IS NOT NULL OR user_id IS NOT NULL)
"""
# $3: the name of an unknown category.
CATEGORY_REVENUE = """
    SELECT o.currency, COALESCE(l.category_name, $3) AS category_name,
           sum(l.revenue_minor)::bigint AS revenue, sum(l.quantity)::bigint AS items
    FROM analytics.fact_orders o
    JOIN analytics.fact_order_lines l ON l.order_id = o.order_id
    WHERE o.order_timestamp >= $1 AND o.order_timestamp < $2
    GROUP BY 1, 2
"""
# $1 type, $2 and $3 the range, $4 how many.
TOP_BOOKS = """
    WITH top AS (
        SELECT book_id, count(*) AS interactions
        FROM analytics.fact_book_interactions
        WHERE interaction_type = $1
          AND interaction_timestamp >= $2 AND interaction_timestamp < $3
        GROUP BY book_id
        ORDER BY interactions DESC, book_id
        LIMIT $4
    )
    SELECT top.book_id, COALESCE(b.title, '') AS title, top.interactions
    FROM top LEFT JOIN analytics.dim_books b ON b.book_id = top.book_id
    ORDER BY top.interactions DESC, top.book_id
"""


@dataclass(frozen=True)
class CategoryRevenue:
    category_name: str
    revenue_minor: int
    order_items: int


@dataclass(frozen=True)
class CurrencyFigures:
    """The money figures of one hour in one currency."""

    currency: str
    total_orders: int = 0
    total_revenue_minor: int = 0
    average_order_value_minor: int = 0
    top_categories: tuple[CategoryRevenue, ...] = ()


@dataclass(frozen=True)
class HourlyMetrics:
    hour_start: datetime
    # Orders in every currency.
    total_orders: int
    sessions_with_view: int
    conversion_rate: float
    by_currency: Mapping[str, CurrencyFigures] = field(default_factory=dict)

    def in_currency(self, currency: str) -> CurrencyFigures:
        """The figures in `currency`: zeros when no order of the hour was in it."""
        return self.by_currency.get(currency) or CurrencyFigures(currency)

    def document(self) -> dict[str, Any]:
        """The JSON written to S3 (the seed's field names, money in minor units)."""

        def money(minor: int, currency: str) -> dict[str, Any]:
            return {"currencyCode": currency, "minorUnits": minor}

        return {
            "timestamp": self.hour_start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "totalOrders": self.total_orders,
            "sessionsWithView": self.sessions_with_view,
            "conversionRate": self.conversion_rate,
            "byCurrency": {
                code: {
                    "totalOrders": f.total_orders,
                    "totalRevenue": money(f.total_revenue_minor, code),
                    "averageOrderValue": money(f.average_order_value_minor, code),
                    "topCategories": [
                        {
                            "categoryName": c.category_name,
                            "revenue": money(c.revenue_minor, code),
                            "orderItems": c.order_items,
                        }
                        for c in f.top_categories
                    ],
                }
                for code, f in sorted(self.by_currency.items())
            },
        }

    def to_json(self) -> bytes:
        return json.dumps(self.document(), sort_keys=True, separators=(",", ":")).encode()


def is_whole_hour(instant: datetime) -> bool:
    """True when `instant` (aware) is on a whole hour in UTC."""
    utc = instant.astimezone(UTC)
    return utc.minute == 0 and utc.second == 0 and utc.microsecond == 0


def parse_hour(text: str) -> datetime:
    """An hour given on the command line: ISO 8601 (e.g. 2026-11-26T04:00Z; no zone: UTC),
    which must be on a whole hour. ValueError otherwise."""
    instant = datetime.fromisoformat(text)
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    if not is_whole_hour(instant):
        raise ValueError(f"not a whole hour in UTC: {text}")
    return instant.astimezone(UTC)


def last_closed_hour(now: datetime | None = None) -> datetime:
    """The start of the last hour that has ended (the one before the current hour)."""
    current = (now or datetime.now(UTC)).astimezone(UTC)
    return current.replace(minute=0, second=0, microsecond=0) - HOUR


def s3_key(hour_start: datetime) -> str:
    h = hour_start.astimezone(UTC)
    return f"hourly-metrics/{h.year}/{h.month}/{h.day}/{h.hour}.json"


def _average(total: int, count: int) -> int:
    """total / count rounded half up (both non-negative); 0 for no orders."""
    return (2 * total + count) // (2 * count) if count else 0


async def compute_hourly_metrics(conn: asyncpg.Connection, hour_start: datetime) -> HourlyMetrics:
    """The hour's figures, read from the facts (nothing is written)."""
    start, end = hour_start, hour_start + HOUR
    orders = await conn.fetch(ORDERS_IN_HOUR, start, end)
    sessions = await conn.fetchval(SESSIONS_WITH_VIEW, start, end)
    categories = await conn.fetch(CATEGORY_REVENUE, start, end, UNKNOWN_CATEGORY)
    tops: dict[str, list[CategoryRevenue]] = {}
    for row in categories:
        tops.setdefault(row["currency"], []).append(
            CategoryRevenue(row["category_name"], row["revenue"], row["items"])
        )
    by_currency = {}
    for row in orders:
        code = row["currency"]
        best = sorted(tops.get(code, []), key=lambda c: (-c.revenue_minor, c.category_name))
        by_currency[code] = CurrencyFigures(
            code,
            row["orders"],
            row["revenue"],
            _average(row["revenue"], row["orders"]),
            tuple(best[:TOP_CATEGORIES]),
        )
    total_orders = sum(row["orders"] for row in orders)
    return HourlyMetrics(
        hour_start.astimezone(UTC),
        total_orders,
        sessions,
        total_orders / sessions if sessions else 0.0,
        by_currency,
    )


async def store_hourly_metrics(conn: asyncpg.Connection, metrics: HourlyMetrics) -> None:
    """Replaces the hour's rows with `metrics`, in one transaction."""
    async with conn.transaction():
        await conn.execute(
            """
            INSERT INTO analytics.hourly_metrics
                (hour_start, total_orders, sessions_with_view, conversion_rate, computed_at)
            VALUES ($1, $2, $3, $4, now())
            ON CONFLICT (hour_start) DO UPDATE SET
                total_orders = excluded.total_orders,
                sessions_with_view = excluded.sessions_with_view,
                conversion_rate = excluded.conversion_rate,
                computed_at = excluded.computed_at
            """,
            metrics.hour_start,
            metrics.total_orders,
            metrics.sessions_with_view,
            metrics.conversion_rate,
        )
        await conn.execute(
            "DELETE FROM analytics.hourly_metrics_by_currency WHERE hour_start = $1",
            metrics.hour_start,
        )
        await conn.executemany(
            """
            INSERT INTO analytics.hourly_metrics_by_currency (hour_start, currency,
                total_orders, total_revenue_minor, average_order_value_minor, top_categories)
            VALUES ($1, $2, $3, $4, $5, $6)
            """,
            [
                (
                    metrics.hour_start,
                    f.currency,
                    f.total_orders,
                    f.total_revenue_minor,
                    f.average_order_value_minor,
                    [
                        {
                            "category_name": c.category_name,
                            "revenue_minor": c.revenue_minor,
                            "order_items": c.order_items,
                        }
                        for c in f.top_categories
                    ],
                )
                for f in metrics.by_currency.values()
            ],
        )


async def stored_hourly_metrics(
    conn: asyncpg.Connection, hour_start: datetime
) -> HourlyMetrics | None:
    """What the job stored for the hour; None when it has not run for it."""
    hour = await conn.fetchrow(
        "SELECT * FROM analytics.hourly_metrics WHERE hour_start = $1", hour_start
    )
    if hour is None:
        return None
    rows = await conn.fetch(
        "SELECT * FROM analytics.hourly_metrics_by_currency WHERE hour_start = $1", hour_start
    )
    return HourlyMetrics(
        hour["hour_start"].astimezone(UTC),
        hour["total_orders"],
        hour["sessions_with_view"],
        hour["conversion_rate"],
        {
            row["currency"]: CurrencyFigures(
                row["currency"],
                row["total_orders"],
                row["total_revenue_minor"],
                row["average_order_value_minor"],
                tuple(
                    CategoryRevenue(c["category_name"], c["revenue_minor"], c["order_items"])
                    for c in row["top_categories"]
                ),
            )
            for row in rows
        },
    )


async def hourly_metrics(pool: asyncpg.Pool, hour_start: datetime) -> HourlyMetrics:
    """What GetHourlyMetrics serves: the job's figures when it has run for the hour (the
    BI tools see the same), else computed now from the facts (the current hour, or one
    the job has not reached yet) without storing them: storing is the job's."""
    async with pool.acquire() as conn:
        stored = await stored_hourly_metrics(conn, hour_start)
        return stored or await compute_hourly_metrics(conn, hour_start)


async def write_hourly_metrics(
    pool: asyncpg.Pool, s3: Any, bucket: str, hour_start: datetime
) -> HourlyMetrics:
    """The job's work for one hour: compute, store in the warehouse, write to S3."""
    async with pool.acquire() as conn:
        metrics = await compute_hourly_metrics(conn, hour_start)
        await store_hourly_metrics(conn, metrics)
    await s3.put_object(
        Bucket=bucket,
        Key=s3_key(hour_start),
        Body=metrics.to_json(),
        ContentType="application/json",
    )
    return metrics


@dataclass(frozen=True)
class TopBook:
    book_id: int
    title: str
    interaction_count: int


async def top_books(
    pool: asyncpg.Pool, interaction_type: str, start: datetime, end: datetime, limit: int
) -> list[TopBook]:
    """The `limit` books with the most interactions of the type in [start, end), most
    first (ties by book id); titles from dim_books ("" for a book it does not know)."""
    rows = await pool.fetch(TOP_BOOKS, interaction_type, start, end, limit)
    return [TopBook(r["book_id"], r["title"], r["interactions"]) for r in rows]
