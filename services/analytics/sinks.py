"""The consumer's sinks besides the warehouse: Timestream (cart events) and the S3 data
lake (every event). The consumer worker writes each batch it read to each of them before
it commits the batch's warehouse rows and checkpoint; both are idempotent per event, so a
batch written again after a crash changes nothing."""

from __future__ import annotations

from contextlib import AsyncExitStack

import asyncpg

from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.stores import aws_session, open_aws_client
from services.analytics.lake import LakeSink
from services.analytics.records import Sink
from services.analytics.timestream import TimestreamSink, WarehouseCategories


async def open_sinks(settings: Settings, pool: asyncpg.Pool, stack: AsyncExitStack) -> list[Sink]:
    """Timestream's and the lake's sinks, their clients closed with `stack`."""
    session = aws_session(settings)
    timestream = await open_aws_client(session, stack, "timestream-write", settings)
    s3 = await open_aws_client(session, stack, "s3", settings)
    return [
        TimestreamSink(timestream, settings.timestream_database, WarehouseCategories(pool)),
        LakeSink(s3, settings.data_lake_bucket),
    ]
