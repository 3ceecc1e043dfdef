"""Creates what analytics writes to: the warehouse schema, the Kinesis stream, the S3 data
lake bucket and the Timestream tables."""

from __future__ import annotations

from contextlib import AsyncExitStack

from cloudshelf.runtime.aws_resources import (
    ensure_bucket,
    ensure_dynamodb_table,
    ensure_event_bus,
    ensure_kinesis_stream,
    ensure_queue,
    ensure_rule_to_queue,
    ensure_timestream_table,
)
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.migrations import migrate_to_latest
from cloudshelf.runtime.stores import aws_session, open_aws_client
from services.analytics.consumer import lease_table_name
from services.analytics.forwarder import DOMAIN_EVENTS_PATTERN, events_queue
from services.analytics.leases import lease_table_definition

STREAM_SHARDS = 2
TIMESTREAM_TABLES = ("CartEvents", "BookInteractions")
# Hot memory store one day, magnetic store one year (the seed's analytics_raw retention).
TIMESTREAM_RETENTION = {
    "MemoryStoreRetentionPeriodInHours": 24,
    "MagneticStoreRetentionPeriodInDays": 365,
}


def _said(what: str, created: bool) -> str:
    return f"{what}: {'created' if created else 'exists'}"


async def provision(settings: Settings) -> list[str]:
    done = await migrate_to_latest(settings.postgres_dsn, "services.analytics")
    session = aws_session(settings)
    async with AsyncExitStack() as stack:
        kinesis = await open_aws_client(session, stack, "kinesis", settings)
        s3 = await open_aws_client(session, stack, "s3", settings)
        timestream = await open_aws_client(session, stack, "timestream-write", settings)
        created = await ensure_kinesis_stream(kinesis, settings.analytics_stream, STREAM_SHARDS)
        done.append(_said(f"kinesis stream {settings.analytics_stream}", created))
        dynamodb = await open_aws_client(session, stack, "dynamodb", settings)
        leases = lease_table_name()
        created = await ensure_dynamodb_table(dynamodb, lease_table_definition(leases), None)
        done.append(_said(f"dynamodb table {leases} (consumer leases)", created))
        created = await ensure_bucket(s3, settings.data_lake_bucket, settings.aws_region)
        done.append(_said(f"s3 bucket {settings.data_lake_bucket}", created))
        for table in TIMESTREAM_TABLES:
            # Magnetic store writes: a replay of events older than a day (the consumer
            # catching up) is written, not rejected as too old for the memory store.
            created = await ensure_timestream_table(
                timestream,
                settings.timestream_database,
                table,
                TIMESTREAM_RETENTION,
                magnetic_store_writes=True,
            )
            done.append(_said(f"timestream table {settings.timestream_database}.{table}", created))
        done += await _provision_forwarding(settings, stack)
    return done


async def _provision_forwarding(settings: Settings, stack: AsyncExitStack) -> list[str]:
    """The domain events' route into the forwarder's queue (services/analytics/forwarder.py)."""
    session = aws_session(settings)
    sqs = await open_aws_client(session, stack, "sqs", settings)
    events = await open_aws_client(session, stack, "events", settings)
    name = events_queue()
    queue, dead_letters = await ensure_queue(sqs, name)
    # Whichever service provisions first creates the bus.
    await ensure_event_bus(events, settings.event_bus)
    await ensure_rule_to_queue(
        events, sqs, bus=settings.event_bus, rule=name, pattern=DOMAIN_EVENTS_PATTERN, queue=queue
    )
    return [
        f"sqs queue {name} (dead letters: {dead_letters.url.rsplit('/', 1)[-1]}): ready",
        f"eventbridge rule {name} on {settings.event_bus} -> {name}: ready",
    ]
