"""Hourly metrics, dim_time and the figures' RPCs (GetHourlyMetrics, ListTopBooks).

The facts are set up by inserting rows into the warehouse tables directly (the consumer
that fills them from the stream is another stream of work): each test takes an hour or a
range of its own, at random in a past year, so tests and runs do not see each other's
facts.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aioboto3
import asyncpg
import grpc
import pytest
import pytest_asyncio
from google.protobuf.timestamp_pb2 import Timestamp

from cloudshelf.analytics.v1 import analytics_pb2 as pb
from cloudshelf.analytics.v1 import analytics_pb2_grpc
from cloudshelf.common.v1 import common_pb2
from cloudshelf.devstack.stack import REPO_ROOT, Stack
from cloudshelf.runtime.stores import init_postgres_connection
from services.analytics.jobs import METRICS_HOURS
from services.analytics.lake import hours_back
from services.analytics.metrics import HOUR, last_closed_hour, s3_key
from tests.conftest import ChannelTo, expect_error

if TYPE_CHECKING:
    from cloudshelf.analytics.v1.analytics_pb2_grpc import (
        AnalyticsServiceAsyncStub as Analytics,
    )

pytestmark = pytest.mark.integration

Code = grpc.StatusCode


@pytest_asyncio.fixture
async def warehouse(stack: Stack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.postgres.dsn("analytics"))
    await init_postgres_connection(conn)
    try:
        yield conn
    finally:
        await conn.close()


@pytest_asyncio.fixture
async def analytics(channel_to: ChannelTo) -> Analytics:
    """The analytics service as the session's admin."""
    return analytics_pb2_grpc.AnalyticsServiceStub(channel_to("analytics"))  # type: ignore[return-value]


@pytest_asyncio.fixture
async def s3(stack: Stack) -> AsyncIterator[Any]:
    settings = stack.settings("analytics")
    session = aioboto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    )
    async with session.client("s3", endpoint_url=settings.aws_endpoint_url) as client:
        yield client


def random_hour(year: int) -> datetime:
    """A whole hour at random in `year` (UTC)."""
    start = datetime(year, 1, 1, tzinfo=UTC)
    return start + timedelta(hours=secrets.randbelow(364 * 24))


def ts(instant: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(instant)
    return message


async def run_job(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`cloudshelf job ...` as the analytics CronJobs run it (the analytics pod's env)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cloudshelf.cli", "job", *args],
        env=stack.service_env("analytics"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def add_order(
    conn: asyncpg.Connection,
    at: datetime,
    currency: str,
    session_id: str,
    lines: list[tuple[int, str, int, int]],
) -> str:
    """An order fact and its lines (book id, category, quantity, revenue in minor units)."""
    order_id = f"o-{secrets.token_hex(8)}"
    await conn.execute(
        """
        INSERT INTO analytics.fact_orders (order_id, user_id, session_id, order_date,
            order_timestamp, currency, total_amount_minor, total_items)
        VALUES ($1, NULL, $2, $3, $4, $5, $6, $7)
        """,
        order_id,
        session_id,
        at.date(),
        at,
        currency,
        sum(line[3] for line in lines),
        sum(line[2] for line in lines),
    )
    await conn.executemany(
        "INSERT INTO analytics.fact_order_lines "
        "(order_id, book_id, category_name, quantity, revenue_minor, currency) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        [
            (order_id, book, category, qty, revenue, currency)
            for book, category, qty, revenue in lines
        ],
    )
    return order_id


async def add_interaction(
    conn: asyncpg.Connection,
    at: datetime,
    kind: str,
    book_id: int,
    session_id: str | None,
    user_id: str | None = None,
) -> None:
    await conn.execute(
        """
        INSERT INTO analytics.fact_book_interactions (interaction_id, book_id, user_id,
            session_id, interaction_type, interaction_timestamp)
        VALUES ($1, $2, $3, $4, $5, $6)
        """,
        secrets.token_hex(16),
        book_id,
        user_id,
        session_id,
        kind,
        at,
    )


async def known_hour(conn: asyncpg.Connection) -> datetime:
    """An hour with hand-countable facts, and facts just outside it.

    In the hour: USD orders of 2,500 (Fiction 2,000 for 2 copies, Science 500 for 1) and
    1,001 (Science, 1 copy, at its last microsecond), a EUR order of 3,000 (Fiction, 1).
    Views by sessions s1 (twice), s2, s4 and by a user without a session: 4 visitors.
    Outside: a USD order a microsecond before and one at the next hour, a view at the
    next hour, an add-to-cart (not a view) in the hour.
    """
    hour = random_hour(2021)
    tag = secrets.token_hex(4)
    s1, s2, s3, s4 = (f"{tag}-s{n}" for n in range(1, 5))
    await add_order(
        conn,
        hour + timedelta(minutes=5),
        "USD",
        s1,
        [(1, "Fiction", 2, 2000), (2, "Science", 1, 500)],
    )
    await add_order(
        conn, hour + timedelta(hours=1, microseconds=-1), "USD", s2, [(3, "Science", 1, 1001)]
    )
    await add_order(conn, hour + timedelta(minutes=30), "EUR", s3, [(1, "Fiction", 1, 3000)])
    await add_order(conn, hour - timedelta(microseconds=1), "USD", s1, [(1, "Fiction", 1, 9999)])
    await add_order(conn, hour + timedelta(hours=1), "USD", s1, [(1, "Fiction", 1, 7777)])
    for minute, session in ((1, s1), (2, s1), (3, s2), (4, s4)):
        await add_interaction(conn, hour + timedelta(minutes=minute), "view", 1, session)
    await add_interaction(conn, hour + timedelta(minutes=6), "view", 2, None, f"{tag}-user")
    await add_interaction(conn, hour + timedelta(hours=1), "view", 1, f"{tag}-s5")
    await add_interaction(conn, hour + timedelta(minutes=7), "add_to_cart", 1, f"{tag}-s6")
    return hour


def usd(minor: int) -> common_pb2.Money:
    return common_pb2.Money(minor_units=minor, currency_code="USD")


def expected_usd(hour: datetime) -> pb.HourlyMetrics:
    metrics = pb.HourlyMetrics(
        total_orders=2,
        total_revenue=usd(3501),
        # 3,501 / 2 = 1,750.5: half up.
        average_order_value=usd(1751),
        # 3 orders (every currency) over 4 visitors with a view.
        conversion_rate=0.75,
        top_categories=[
            pb.CategoryRevenue(
                category_name="Fiction",
                revenue=usd(2000),
                order_items=2,
            ),
            pb.CategoryRevenue(
                category_name="Science",
                revenue=usd(1501),
                order_items=2,
            ),
        ],
    )
    metrics.hour_start.FromDatetime(hour)
    return metrics


async def test_hourly_metrics_of_a_known_hour_equal_the_hand_computed_figures(
    stack: Stack, warehouse: asyncpg.Connection, analytics: Analytics, s3: Any
) -> None:
    hour = await known_hour(warehouse)

    # Before the job ran for the hour, GetHourlyMetrics computes it from the facts.
    live = await analytics.GetHourlyMetrics(
        pb.GetHourlyMetricsRequest(hour_start=ts(hour), currency_code="USD")
    )
    assert live.metrics == expected_usd(hour)
    assert (
        await warehouse.fetchval(
            "SELECT count(*) FROM analytics.hourly_metrics WHERE hour_start = $1", hour
        )
        == 0
    )

    done = await run_job(stack, "hourly-metrics", "--hour", hour.isoformat())
    assert done.returncode == 0, done.stderr
    assert "3 orders" in done.stdout

    # Kept in the warehouse.
    row = await warehouse.fetchrow(
        "SELECT total_orders, sessions_with_view, conversion_rate "
        "FROM analytics.hourly_metrics WHERE hour_start = $1",
        hour,
    )
    assert dict(row) == {"total_orders": 3, "sessions_with_view": 4, "conversion_rate": 0.75}
    by_currency = {
        r["currency"]: dict(r)
        for r in await warehouse.fetch(
            "SELECT currency, total_orders, total_revenue_minor, average_order_value_minor, "
            "top_categories FROM analytics.hourly_metrics_by_currency WHERE hour_start = $1",
            hour,
        )
    }
    assert by_currency["EUR"] == {
        "currency": "EUR",
        "total_orders": 1,
        "total_revenue_minor": 3000,
        "average_order_value_minor": 3000,
        "top_categories": [{"category_name": "Fiction", "revenue_minor": 3000, "order_items": 1}],
    }
    assert set(by_currency) == {"USD", "EUR"}

    # Written to S3 at the seed's key (no zero padding).
    key = s3_key(hour)
    assert key == f"hourly-metrics/{hour.year}/{hour.month}/{hour.day}/{hour.hour}.json"
    bucket = stack.settings("analytics").data_lake_bucket
    stored = await s3.get_object(Bucket=bucket, Key=key)
    document = json.loads(await stored["Body"].read())
    assert document["timestamp"] == hour.strftime("%Y-%m-%dT%H:00:00Z")
    assert document["totalOrders"] == 3 and document["conversionRate"] == 0.75
    usd = document["byCurrency"]["USD"]
    assert usd["totalRevenue"] == {"currencyCode": "USD", "minorUnits": 3501}
    assert usd["averageOrderValue"]["minorUnits"] == 1751
    assert [c["categoryName"] for c in usd["topCategories"]] == ["Fiction", "Science"]

    # Served from the warehouse, in each currency; another currency is zeros.
    served = await analytics.GetHourlyMetrics(
        pb.GetHourlyMetricsRequest(hour_start=ts(hour), currency_code="USD")
    )
    assert served.metrics == expected_usd(hour)
    gbp = (
        await analytics.GetHourlyMetrics(
            pb.GetHourlyMetricsRequest(hour_start=ts(hour), currency_code="GBP")
        )
    ).metrics
    assert gbp.total_orders == 0 and gbp.total_revenue.minor_units == 0
    assert gbp.total_revenue.currency_code == "GBP" and gbp.conversion_rate == 0.75
    assert not gbp.top_categories

    # Re-running the hour: the same object, byte for byte, and the same rows.
    again = await run_job(stack, "hourly-metrics", "--hour", hour.isoformat())
    assert again.returncode == 0, again.stderr
    restored = await s3.get_object(Bucket=bucket, Key=key)
    assert restored["ETag"] == stored["ETag"]
    assert (
        await warehouse.fetchrow(
            "SELECT total_orders, sessions_with_view, conversion_rate "
            "FROM analytics.hourly_metrics WHERE hour_start = $1",
            hour,
        )
        == row
    )
    assert (
        await warehouse.fetchval(
            "SELECT count(*) FROM analytics.hourly_metrics_by_currency WHERE hour_start = $1", hour
        )
        == 2
    )


async def test_an_hour_without_facts_is_zeros_not_not_found(
    stack: Stack, analytics: Analytics, s3: Any
) -> None:
    hour = random_hour(2019)
    empty = (
        await analytics.GetHourlyMetrics(
            pb.GetHourlyMetricsRequest(hour_start=ts(hour), currency_code="JPY")
        )
    ).metrics
    assert empty.total_orders == 0 and empty.conversion_rate == 0.0
    assert empty.average_order_value.currency_code == "JPY"
    assert empty.hour_start.ToDatetime(tzinfo=UTC) == hour
    done = await run_job(stack, "hourly-metrics", "--hour", hour.strftime("%Y-%m-%dT%H:%M"))
    assert done.returncode == 0, done.stderr
    body = await s3.get_object(
        Bucket=stack.settings("analytics").data_lake_bucket, Key=s3_key(hour)
    )
    assert json.loads(await body["Body"].read())["byCurrency"] == {}


async def test_the_job_refuses_an_hour_that_is_not_whole(stack: Stack) -> None:
    done = await run_job(stack, "hourly-metrics", "--hour", "2021-03-04T05:30:00Z")
    assert done.returncode == 2 and "not a whole hour" in done.stderr
    wrong = await run_job(stack, "hourly-metrics", "--years", "3")
    assert wrong.returncode == 2 and "takes no --years" in wrong.stderr


async def _stored(conn: asyncpg.Connection, hour: datetime) -> tuple[Any, ...] | None:
    """(orders, USD revenue, computed_at) the job stored for the hour; None: never run."""
    row = await conn.fetchrow(
        "SELECT h.total_orders, c.total_revenue_minor, h.computed_at "
        "FROM analytics.hourly_metrics h LEFT JOIN analytics.hourly_metrics_by_currency c "
        "ON c.hour_start = h.hour_start AND c.currency = 'USD' WHERE h.hour_start = $1",
        hour,
    )
    return tuple(row) if row else None


async def test_the_job_recomputes_recent_hours_so_late_events_count(
    stack: Stack, warehouse: asyncpg.Connection, s3: Any
) -> None:
    """An order that reaches the warehouse late (the consumer lagging or replaying) for an
    hour already computed is counted by the next run: each run recomputes the last 3 hours
    up to --hour (the last ended one by default), and a re-run changes nothing."""
    last = random_hour(2022)
    earlier = last - timedelta(hours=2)
    tag = secrets.token_hex(4)
    await add_order(
        warehouse, earlier + timedelta(minutes=10), "USD", f"{tag}-a", [(1, "F", 1, 1000)]
    )
    first = await run_job(stack, "hourly-metrics", "--hour", last.isoformat())
    assert first.returncode == 0, first.stderr
    assert [line.split(":")[0] for line in first.stdout.splitlines()][-3:] == [
        f"hourly metrics {h:%Y-%m-%dT%H}" for h in (earlier, earlier + HOUR, last)
    ]
    assert await _stored(warehouse, earlier) is not None
    assert (await _stored(warehouse, earlier) or ())[:2] == (1, 1000)
    assert await _stored(warehouse, earlier - HOUR) is None  # not in the window

    # Late: an order of that hour arrives after the hour was computed.
    await add_order(
        warehouse, earlier + timedelta(minutes=20), "USD", f"{tag}-b", [(2, "F", 1, 500)]
    )
    second = await run_job(stack, "hourly-metrics", "--hour", last.isoformat())
    assert second.returncode == 0, second.stderr
    recomputed = await _stored(warehouse, earlier)
    assert recomputed is not None and recomputed[:2] == (2, 1500)
    bucket = stack.settings("analytics").data_lake_bucket
    document = await s3.get_object(Bucket=bucket, Key=s3_key(earlier))
    body = json.loads(await document["Body"].read())
    assert body["totalOrders"] == 2
    assert body["byCurrency"]["USD"]["totalRevenue"]["minorUnits"] == 1500

    # Idempotent: the same figures, the same object.
    third = await run_job(stack, "hourly-metrics", "--hour", last.isoformat())
    assert third.returncode == 0, third.stderr
    after_third = await _stored(warehouse, earlier)
    assert after_third is not None and after_third[:2] == (2, 1500)
    again = await s3.get_object(Bucket=bucket, Key=s3_key(earlier))
    assert again["ETag"] == document["ETag"]

    # --hours 1: that hour alone; --hours out of range refused.
    single = await run_job(stack, "hourly-metrics", "--hour", last.isoformat(), "--hours", "1")
    assert single.returncode == 0 and len(single.stdout.splitlines()) == 1
    assert await _stored(warehouse, earlier) == after_third  # not recomputed
    for hours in ("0", "169"):
        refused = await run_job(stack, "hourly-metrics", "--hours", hours)
        assert refused.returncode == 2 and "--hours must be between 1 and 168" in refused.stderr


async def test_the_default_run_computes_the_last_three_ended_hours(
    stack: Stack, warehouse: asyncpg.Connection
) -> None:
    started = await warehouse.fetchval("SELECT now()")
    windows = {tuple(hours_back(last_closed_hour(), METRICS_HOURS))}
    done = await run_job(stack, "hourly-metrics")
    windows.add(tuple(hours_back(last_closed_hour(), METRICS_HOURS)))  # an hour may end
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    fresh = {
        row["hour_start"]
        for row in await warehouse.fetch(
            "SELECT hour_start FROM analytics.hourly_metrics WHERE computed_at >= $1", started
        )
    }
    assert any(set(window) <= fresh for window in windows), (fresh, windows)


async def test_dim_time_is_filled_and_the_yearly_job_extends_it(
    stack: Stack, warehouse: asyncpg.Connection
) -> None:
    # The migration's range, per the seed's columns (ISO day of week and week).
    day = await warehouse.fetchrow(
        "SELECT * FROM analytics.dim_time WHERE date_key = $1", date(2024, 12, 1)
    )
    assert dict(day) == {
        "date_key": date(2024, 12, 1),
        "year": 2024,
        "quarter": 4,
        "month": 12,
        "week": 48,
        "day_of_year": 336,
        "day_of_month": 1,
        "day_of_week": 7,
        "is_weekend": True,
        "is_holiday": False,
        "season": "winter",
    }
    assert (
        await warehouse.fetchval(
            "SELECT count(*) FROM analytics.dim_time WHERE date_key BETWEEN $1 AND $2",
            date(2020, 1, 1),
            date(2030, 12, 31),
        )
        == (date(2030, 12, 31) - date(2020, 1, 1)).days + 1
    )
    seasons = await warehouse.fetch(
        "SELECT month, array_agg(DISTINCT season) AS seasons FROM analytics.dim_time "
        "WHERE year = 2025 GROUP BY month ORDER BY month"
    )
    assert [r["seasons"] for r in seasons] == [
        [s] for s in ["winter"] * 2 + ["spring"] * 3 + ["summer"] * 3 + ["autumn"] * 3 + ["winter"]
    ]

    this_year = datetime.now(UTC).year
    years = 2030 - this_year + 10  # reaches past the migration's range
    done = await run_job(stack, "extend-dim-time", "--years", str(years))
    assert done.returncode == 0, done.stderr
    last = date(this_year + years, 12, 31)
    assert f"filled through {last.isoformat()}" in done.stdout
    assert await warehouse.fetchval("SELECT max(date_key) FROM analytics.dim_time") >= last
    count = await warehouse.fetchval("SELECT count(*) FROM analytics.dim_time")
    # Idempotent: a second run adds nothing.
    again = await run_job(stack, "extend-dim-time", "--years", str(years))
    assert again.returncode == 0, again.stderr
    assert "0 days added" in again.stdout
    assert await warehouse.fetchval("SELECT count(*) FROM analytics.dim_time") == count
    gaps = await warehouse.fetchval(
        "SELECT count(*) FROM (SELECT date_key - lag(date_key) OVER (ORDER BY date_key) AS step "
        "FROM analytics.dim_time) s WHERE step <> 1"
    )
    assert gaps == 0


def top_books_request(**fields: Any) -> pb.ListTopBooksRequest:
    defaults: dict[str, Any] = {
        "type": pb.INTERACTION_TYPE_VIEW,
        "start_time": ts(datetime(2022, 1, 1, tzinfo=UTC)),
        "end_time": ts(datetime(2022, 1, 2, tzinfo=UTC)),
    }
    return pb.ListTopBooksRequest(**{**defaults, **fields})


async def test_list_top_books_counts_one_kind_in_the_range(
    warehouse: asyncpg.Connection, analytics: Analytics
) -> None:
    start = random_hour(2022)
    end = start + timedelta(minutes=10)
    base = 1_000_000 + secrets.randbelow(1_000_000_000)
    a, b, c, d = base, base + 1, base + 2, base + 3
    await warehouse.executemany(
        "INSERT INTO analytics.dim_books (book_id, title, category_name) VALUES ($1, $2, 'X')",
        [(a, "Alpha"), (b, "Beta"), (d, "Delta")],
    )
    for book, views in ((a, 3), (b, 2), (c, 2), (d, 1)):
        for n in range(views):
            await add_interaction(warehouse, start + timedelta(seconds=n), "view", book, "s")
    for n in range(5):
        await add_interaction(
            warehouse, start + timedelta(minutes=1, seconds=n), "purchase", d, "s"
        )
    # Outside the range (end excluded), or another kind.
    for book in (c, c, c):
        await add_interaction(warehouse, end, "view", book, "s")
        await add_interaction(warehouse, start - timedelta(microseconds=1), "view", book, "s")

    def request(kind: pb.InteractionType.ValueType, limit: int = 0) -> pb.ListTopBooksRequest:
        return pb.ListTopBooksRequest(
            type=kind, start_time=ts(start), end_time=ts(end), limit=limit
        )

    top = (await analytics.ListTopBooks(request(pb.INTERACTION_TYPE_VIEW, 3))).books
    # Ties by book id; a book dim_books does not know has no title.
    assert [(x.book_id, x.title, x.interaction_count) for x in top] == [
        (a, "Alpha", 3),
        (b, "Beta", 2),
        (c, "", 2),
    ]
    every = (await analytics.ListTopBooks(request(pb.INTERACTION_TYPE_VIEW))).books
    assert [x.book_id for x in every] == [a, b, c, d]
    bought = (await analytics.ListTopBooks(request(pb.INTERACTION_TYPE_PURCHASE))).books
    assert [(x.book_id, x.interaction_count) for x in bought] == [(d, 5)]
    assert not (await analytics.ListTopBooks(request(pb.INTERACTION_TYPE_REVIEW))).books


@pytest.mark.parametrize(
    ("request_fields", "field", "words"),
    [
        ({}, "hour_start", ("required",)),
        ({"hour_start": Timestamp(seconds=3600 * 400000 + 60)}, "hour_start", ("whole hour",)),
        ({"hour_start": Timestamp(seconds=3600 * 400000, nanos=1)}, "hour_start", ("whole hour",)),
        ({"hour_start": Timestamp(seconds=-3600 * 10**9)}, "hour_start", ("out of range",)),
        (
            {"hour_start": Timestamp(seconds=3600 * 400000), "currency_code": ""},
            "currency_code",
            ("ISO 4217",),
        ),
        (
            {"hour_start": Timestamp(seconds=3600 * 400000), "currency_code": "usd"},
            "currency_code",
            ("ISO 4217",),
        ),
        (
            {"hour_start": Timestamp(seconds=3600 * 400000), "currency_code": "XXX"},
            "currency_code",
            ("ISO 4217",),
        ),
    ],
)
async def test_get_hourly_metrics_validates(
    analytics: Analytics, request_fields: dict[str, Any], field: str, words: tuple[str, ...]
) -> None:
    fields = {"currency_code": "USD", **request_fields}
    await expect_error(
        analytics.GetHourlyMetrics(pb.GetHourlyMetricsRequest(**fields)),
        Code.INVALID_ARGUMENT,
        field,
        *words,
    )


@pytest.mark.parametrize(
    ("request_fields", "field", "words"),
    [
        ({"type": pb.INTERACTION_TYPE_UNSPECIFIED}, "type", ()),
        ({"type": 9}, "type", ()),
        ({"start_time": None}, "start_time", ("required",)),
        ({"end_time": None}, "end_time", ("required",)),
        ({"end_time": ts(datetime(2022, 1, 1, tzinfo=UTC))}, "end_time", ("after",)),
        ({"end_time": ts(datetime(2023, 1, 3, tzinfo=UTC))}, "end_time", ("366 days",)),
        ({"limit": 101}, "limit", ("100",)),
        ({"limit": -1}, "limit", ("100",)),
    ],
)
async def test_list_top_books_validates(
    analytics: Analytics, request_fields: dict[str, Any], field: str, words: tuple[str, ...]
) -> None:
    request = top_books_request(**{k: v for k, v in request_fields.items() if v is not None})
    for name, value in request_fields.items():
        if value is None:
            request.ClearField(name)  # type: ignore[arg-type]
    await expect_error(analytics.ListTopBooks(request), Code.INVALID_ARGUMENT, field, *words)


async def test_figures_are_for_the_back_office_and_services(
    channel_to: ChannelTo, shopper_token: str, service_token: str
) -> None:
    hour = pb.GetHourlyMetricsRequest(
        hour_start=ts(datetime(2022, 5, 1, 3, tzinfo=UTC)), currency_code="USD"
    )
    shopper: Analytics = analytics_pb2_grpc.AnalyticsServiceStub(  # type: ignore[assignment]
        channel_to("analytics", shopper_token)
    )
    anonymous: Analytics = analytics_pb2_grpc.AnalyticsServiceStub(  # type: ignore[assignment]
        channel_to("analytics", None)
    )
    service: Analytics = analytics_pb2_grpc.AnalyticsServiceStub(  # type: ignore[assignment]
        channel_to("analytics", service_token)
    )
    await expect_error(shopper.GetHourlyMetrics(hour), Code.PERMISSION_DENIED)
    await expect_error(shopper.ListTopBooks(top_books_request()), Code.PERMISSION_DENIED)
    await expect_error(anonymous.GetHourlyMetrics(hour), Code.UNAUTHENTICATED)
    await expect_error(anonymous.ListTopBooks(top_books_request()), Code.UNAUTHENTICATED)
    assert (await service.GetHourlyMetrics(hour)).metrics.total_revenue.currency_code == "USD"
    await service.ListTopBooks(top_books_request())
