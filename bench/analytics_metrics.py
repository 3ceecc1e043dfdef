"""The warehouse's hourly metrics query on many interactions (issue 19's benchmark item):
time and plan.

    python -m bench.analytics_metrics --interactions 10000000   # the issue's figure
    python -m bench.analytics_metrics --interactions 200000     # a quick look

It starts its own PostgreSQL on a free port (data in .state/bench-analytics, kept
between runs: a bigger --interactions adds the difference), migrates the analytics schema
into a database of its own, generates the facts with generate_series in PostgreSQL
(interactions spread over --days days, 70% views, ~8 interactions per session; one order
per 50 interactions, 1 to 3 lines each, 20 categories, two currencies), then times what
the hourly job and GetHourlyMetrics run for one hour (services/analytics/metrics.py's
compute_hourly_metrics: its three queries), ListTopBooks over a day and a week, and prints
EXPLAIN (ANALYZE, BUFFERS) of each query.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.harness import Figures, measure, report
from cloudshelf.devstack.components import Postgres, free_port
from cloudshelf.devstack.stack import REPO_ROOT
from cloudshelf.runtime.migrations import migrate_to_latest
from cloudshelf.runtime.stores import init_postgres_connection
from services.analytics.metrics import (
    CATEGORY_REVENUE,
    ORDERS_IN_HOUR,
    SESSIONS_WITH_VIEW,
    TOP_BOOKS,
    UNKNOWN_CATEGORY,
    compute_hourly_metrics,
)

STATE = REPO_ROOT / ".state" / "bench-analytics"
DATABASE = "analytics_bench"
# The facts end here, so the data and the measured hour are the same on every run.
END = datetime(2026, 11, 1, tzinfo=UTC)

GENERATE_INTERACTIONS = """
INSERT INTO analytics.fact_book_interactions (interaction_id, book_id, user_id, session_id,
    interaction_type, interaction_timestamp, page_view_duration, came_from, device_type)
SELECT 'bench-' || n,
       1 + (hashint8(n) & 2147483647) % 100000,
       CASE WHEN n % 3 = 0 THEN 'user-' || (n / 24) END,
       'session-' || (n / 8),
       CASE WHEN n % 20 < 14 THEN 'view' WHEN n % 20 < 18 THEN 'add_to_cart'
            WHEN n % 20 < 19 THEN 'purchase' ELSE 'review' END,
       $3::timestamptz - make_interval(secs => ($4::float8 * n / $2)),
       n % 300,
       (ARRAY['search', 'category', 'recommendation'])[1 + n % 3],
       (ARRAY['desktop', 'mobile', 'tablet'])[1 + n % 3]
FROM generate_series($1::bigint, $2::bigint - 1) AS n
"""

GENERATE_ORDERS = """
INSERT INTO analytics.fact_orders (order_id, user_id, session_id, order_date, order_timestamp,
    currency, total_amount_minor, total_items)
SELECT 'bench-order-' || n, 'user-' || (n * 50 / 24), 'session-' || (n * 50 / 8),
       (t AT TIME ZONE 'UTC')::date, t,
       CASE WHEN n % 10 = 0 THEN 'EUR' ELSE 'USD' END,
       (1 + n % 3) * (500 + n % 2000), 1 + n % 3
FROM generate_series($1::bigint, $2::bigint - 1) AS n,
     LATERAL (SELECT $3::timestamptz - make_interval(secs => ($4::float8 * n / $2))) AS at(t)
"""

GENERATE_ORDER_LINES = """
INSERT INTO analytics.fact_order_lines (order_id, book_id, category_name, quantity,
    revenue_minor, currency)
SELECT o.order_id, 1 + (hashint4(line + o.total_items * 7 + length(o.order_id)) & 2147483647)
           % 100000 + line * 100000,
       'category-' || (abs(hashtext(o.order_id || line)) % 20),
       1, o.total_amount_minor / o.total_items, o.currency
FROM analytics.fact_orders o, generate_series(1, o.total_items) AS line
WHERE o.order_id LIKE 'bench-order-%'
  AND NOT EXISTS (SELECT 1 FROM analytics.fact_order_lines l WHERE l.order_id = o.order_id)
"""


async def generate(conn: asyncpg.Connection, interactions: int, days: int) -> None:
    have = await conn.fetchval("SELECT count(*) FROM analytics.fact_book_interactions")
    if have >= interactions:
        return
    span = days * 86400
    print(f"generating {interactions - have} interactions over {days} days ...", flush=True)
    started = time.perf_counter()
    # In chunks, so progress shows and one transaction stays reasonable.
    chunk = 1_000_000
    for first in range(have, interactions, chunk):
        last = min(first + chunk, interactions)
        await conn.execute(GENERATE_INTERACTIONS, first, last, END, span)
        print(f"  {last} interactions", flush=True)
    # The ratio keeps the orders' own timeline when interactions grow between runs.
    orders = interactions // 50
    have_orders = await conn.fetchval(
        "SELECT count(*) FROM analytics.fact_orders WHERE order_id LIKE 'bench-order-%'"
    )
    if have_orders < orders:
        await conn.execute(GENERATE_ORDERS, have_orders, orders, END, span)
        await conn.execute(GENERATE_ORDER_LINES)
    await conn.execute("VACUUM ANALYZE analytics.fact_book_interactions")
    await conn.execute("VACUUM ANALYZE analytics.fact_orders")
    await conn.execute("VACUUM ANALYZE analytics.fact_order_lines")
    print(f"generated in {time.perf_counter() - started:.1f}s", flush=True)


async def explain(conn: asyncpg.Connection, name: str, sql: str, *args: object) -> None:
    plan = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
    print(f"\n--- {name}")
    for row in plan:
        print(row[0])


async def run(dsn: str, interactions: int, days: int, calls: int) -> None:
    conn = await asyncpg.connect(dsn)
    await init_postgres_connection(conn)
    try:
        await generate(conn, interactions, days)
        total = await conn.fetchval("SELECT count(*) FROM analytics.fact_book_interactions")
        hour = END - timedelta(days=days / 2)
        hour = hour.replace(minute=0, second=0, microsecond=0)
        end = hour + timedelta(hours=1)
        in_hour = await conn.fetchval(
            "SELECT count(*) FROM analytics.fact_book_interactions "
            "WHERE interaction_timestamp >= $1 AND interaction_timestamp < $2",
            hour,
            end,
        )
        metrics = await compute_hourly_metrics(conn, hour)
        print(
            f"\nhour {hour:%Y-%m-%dT%H:00Z}: {in_hour} interactions of {total}, "
            f"{metrics.total_orders} orders, {metrics.sessions_with_view} sessions with a "
            f"view, conversion {metrics.conversion_rate:.4f}"
        )

        async def hourly(_: int) -> None:
            await compute_hourly_metrics(conn, hour)

        async def top_day(_: int) -> None:
            await conn.fetch(TOP_BOOKS, "view", hour, hour + timedelta(days=1), 10)

        async def top_week(_: int) -> None:
            await conn.fetch(TOP_BOOKS, "view", hour, hour + timedelta(days=7), 10)

        rows: list[tuple[Figures, Figures | None, str]] = []
        for case, call, count in (
            ("hourly metrics (3 queries, one hour)", hourly, calls),
            ("top 10 books by views, one day", top_day, max(3, calls // 5)),
            ("top 10 books by views, one week", top_week, max(3, calls // 10)),
        ):
            rows.append((await measure(case, call, calls=count, warmup=2), None, ""))
        report(
            "analytics-metrics",
            rows,
            {"interactions": total, "days": days, "interactions_in_hour": in_hour},
        )
        await explain(conn, "orders in the hour", ORDERS_IN_HOUR, hour, end)
        await explain(conn, "sessions with a view in the hour", SESSIONS_WITH_VIEW, hour, end)
        await explain(
            conn, "revenue per category in the hour", CATEGORY_REVENUE, hour, end, UNKNOWN_CATEGORY
        )
        await explain(
            conn,
            "top 10 books by views, one day",
            TOP_BOOKS,
            "view",
            hour,
            hour + timedelta(days=1),
            10,
        )
    finally:
        await conn.close()


async def main(interactions: int, days: int, calls: int) -> None:
    STATE.mkdir(parents=True, exist_ok=True)
    postgres = Postgres(STATE, free_port(), durable=False)
    postgres.start()
    try:
        await postgres.create_databases([DATABASE])
        dsn = postgres.dsn(DATABASE)
        await migrate_to_latest(dsn, "services.analytics")
        await run(dsn, interactions, days, calls)
    finally:
        postgres.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interactions", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.interactions, args.days, args.calls))
