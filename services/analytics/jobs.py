"""Analytics jobs, run from the CLI and from CronJobs (charts/cloudshelf/values.yaml,
services.analytics.jobs):

- `cloudshelf job hourly-metrics [--hour H] [--hours N]`: the metrics of the N hours up
  to H into the warehouse and S3 (services/analytics/metrics.py), oldest first; default:
  the last 3 ended hours, so an hour that events reached late (the consumer lagging or
  replaying) is computed again by the next runs.
- `cloudshelf job extend-dim-time [--years N]`: analytics.dim_time filled from January 1st
  of this year to December 31st N years on (and any gap since its last day).
- `cloudshelf job compact-lake [--hour H] [--hours N]`: the data lake's small files of the
  N hours up to H merged (services/analytics/lake.py); default: the last 3 ended hours,
  so events that arrive late for an hour are compacted by a later run.
Each is safe to re-run.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from datetime import UTC, date, datetime

import asyncpg

from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.stores import aws_session, open_aws_client, open_postgres
from services.analytics.lake import compact_hour, hours_back
from services.analytics.metrics import last_closed_hour, write_hourly_metrics

DIM_TIME_YEARS = 2
COMPACT_HOURS = 3
METRICS_HOURS = 3
MAX_HOURS = 168


def _check_hours(hours: int) -> None:
    if not 1 <= hours <= MAX_HOURS:
        raise ValueError(f"--hours must be between 1 and {MAX_HOURS}")


async def extend_dim_time(conn: asyncpg.Connection, years: int, today: date) -> tuple[int, date]:
    """Fills dim_time up to December 31st of today's year + `years`; returns the days added
    and the last day."""
    last = date(today.year + years, 12, 31)
    first = date(today.year, 1, 1)
    latest = await conn.fetchval("SELECT max(date_key) FROM analytics.dim_time")
    if latest is not None and latest < first:
        first = latest  # close the gap since the last filled day
    added = await conn.fetchval("SELECT analytics.fill_dim_time($1, $2)", first, last)
    return int(added), last


async def run_extend_dim_time(settings: Settings, years: int = DIM_TIME_YEARS) -> str:
    if not 0 <= years <= 50:
        raise ValueError("--years must be between 0 and 50")
    async with AsyncExitStack() as stack:
        pool, _ = await open_postgres(settings, stack)
        async with pool.acquire() as conn:
            added, last = await extend_dim_time(conn, years, datetime.now(UTC).date())
    return f"dim_time: {added} days added, filled through {last.isoformat()}"


async def run_hourly_metrics(
    settings: Settings, hour: datetime | None = None, hours: int = METRICS_HOURS
) -> str:
    """Computes, stores and writes the metrics of the `hours` hours up to `hour` (default:
    the last ended one); each hour's figures replace what an earlier run wrote for it."""
    _check_hours(hours)
    last = hour or last_closed_hour()
    lines = []
    async with AsyncExitStack() as stack:
        pool, _ = await open_postgres(settings, stack)
        s3 = await open_aws_client(aws_session(settings), stack, "s3", settings)
        for hour_start in hours_back(last, hours):
            metrics = await write_hourly_metrics(pool, s3, settings.data_lake_bucket, hour_start)
            currencies = ", ".join(
                f"{code} {f.total_orders} orders {f.total_revenue_minor} minor units"
                for code, f in sorted(metrics.by_currency.items())
            )
            lines.append(
                f"hourly metrics {hour_start:%Y-%m-%dT%H:00Z}: {metrics.total_orders} orders"
                f"{f' ({currencies})' if currencies else ''}, "
                f"conversion {metrics.conversion_rate:.4f} over "
                f"{metrics.sessions_with_view} sessions"
            )
    return "\n".join(lines)


async def run_compact_lake(
    settings: Settings, hour: datetime | None = None, hours: int = COMPACT_HOURS
) -> str:
    _check_hours(hours)
    last = hour or last_closed_hour()
    lines = []
    async with AsyncExitStack() as stack:
        s3 = await open_aws_client(aws_session(settings), stack, "s3", settings)
        for each in hours_back(last, hours):
            done = await compact_hour(s3, settings.data_lake_bucket, each)
            lines.append(
                f"lake {each:%Y-%m-%dT%H:00Z}: {done.partitions} partitions compacted, "
                f"{done.files_merged} files merged, {done.rows} rows "
                f"({done.duplicates_dropped} duplicates dropped)"
            )
    return "\n".join(lines)
