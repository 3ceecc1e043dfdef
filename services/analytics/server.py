"""The analytics service process: Kinesis in, Timestream, the S3 data lake and the
PostgreSQL warehouse out."""

from __future__ import annotations

from contextlib import AsyncExitStack

import asyncpg

from cloudshelf.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.health import Dependency
from cloudshelf.runtime.rpc import ServicerContext
from cloudshelf.runtime.server import ServiceApp, Servicer, run_service
from cloudshelf.runtime.stores import aws_session, open_aws_client, open_postgres
from services.analytics.dead_letters import list_dead_letters
from services.analytics.forwarder import bus_forwarder
from services.analytics.ingest_handlers import IngestHandlers
from services.analytics.policy import ANALYTICS_POLICY
from services.analytics.report_handlers import ReportHandlers
from services.analytics.stream_writer import StreamWriter


class AnalyticsHandlers(IngestHandlers, ReportHandlers):
    """The servicer: one mixin per group of RPCs."""

    def __init__(self, pool: asyncpg.Pool, stream: StreamWriter) -> None:
        self.pool = pool
        self.stream = stream

    async def ListDeadLetters(
        self, request: analytics_pb2.ListDeadLettersRequest, context: ServicerContext
    ) -> analytics_pb2.ListDeadLettersResponse:
        return await list_dead_letters(self.pool, request)


async def setup(settings: Settings, stack: AsyncExitStack) -> ServiceApp:
    pool, postgres = await open_postgres(settings, stack)
    session = aws_session(settings)
    kinesis = await open_aws_client(session, stack, "kinesis", settings)
    s3 = await open_aws_client(session, stack, "s3", settings)
    stream = StreamWriter(kinesis, settings.analytics_stream)
    # The bus's domain events, forwarded into the stream (services/analytics/forwarder.py).
    forwarder = bus_forwarder(await open_aws_client(session, stack, "sqs", settings), stream)

    async def stream_active() -> None:
        summary = await kinesis.describe_stream_summary(StreamName=settings.analytics_stream)
        status = summary["StreamDescriptionSummary"]["StreamStatus"]
        if status not in ("ACTIVE", "UPDATING"):
            raise RuntimeError(f"stream {settings.analytics_stream} is {status}")

    async def bucket_reachable() -> None:
        await s3.head_bucket(Bucket=settings.data_lake_bucket)

    return ServiceApp(
        servicers=[
            Servicer(
                AnalyticsHandlers(pool, stream),
                analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server,
                analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"].full_name,
                ANALYTICS_POLICY,
            )
        ],
        dependencies=[
            postgres,
            Dependency("kinesis", stream_active),
            Dependency("s3", bucket_reachable),
        ],
        background=[forwarder.run],
    )


def main() -> None:
    run_service("analytics", setup)
