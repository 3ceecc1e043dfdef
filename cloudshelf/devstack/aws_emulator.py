"""moto's server, with DynamoDB's and Kinesis' per-request atomicity.

DynamoDB evaluates a ConditionExpression and applies its update as one atomic step, and an
UpdateItem's ADD or `SET a = a + :n` is atomic too; the cart's concurrency control rests
on that. moto's server handles requests on threads and checks a condition and then writes,
without a lock: measured with 64 concurrent AddItem calls on one cart line (conditional
nested ADD) and with TransactWriteItems guarded by a version, it lost 1-2 updates per run.
Taking one lock around each DynamoDB request restores what DynamoDB guarantees; every other
service is served concurrently as before, but Kinesis: moto numbers a shard's next record
as its highest number + 1 and then stores it under that number, so two PutRecords at once
on one shard can take the same number and one record replaces the other (measured with
bench/analytics.py, 4 concurrent writers of 500-record batches: 245 of 9,500 records lost).
Kinesis requests take a lock of their own.

moto also rolls a cancelled TransactWriteItems back by swapping in a copy of each table, which
leaves every open stream shard iterator on the old table's shard, where the cancelled write's
record stays (DynamoDB streams a cancelled transaction nothing): a stream reader would read a
change that never happened and then nothing more. `stream_transactions_on_commit` keeps one
shard object per table, to which a transaction's records are added only once it commits.

moto 5 writes GetRecords answers through its generic, model-driven serializer, which walks
every attribute of both images: measured, ~0.3 s of the emulator's CPU per stream record of a
100-line cart, time every other request waits for. `dump_stream_records_as_json` writes them
as moto writes DynamoDB's own answers (the records are already in the wire's shape).

Run as `python -m cloudshelf.devstack.aws_emulator -H HOST -p PORT`.
"""

from __future__ import annotations

import argparse
import copy
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.utilities import dynamo_json_dump
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


# The X-Amz-Target prefixes of the services whose requests run one at a time (each its own).
SERIALIZED_TARGETS = ("DynamoDB_", "Kinesis_")


def serialize_requests(app: WsgiApp) -> WsgiApp:
    """The app, with DynamoDB requests (X-Amz-Target DynamoDB_*) run one at a time, and
    Kinesis requests (Kinesis_*) one at a time."""
    locks = {prefix: threading.Lock() for prefix in SERIALIZED_TARGETS}

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        target = str(environ.get("HTTP_X_AMZ_TARGET", ""))
        lock = next((lock for prefix, lock in locks.items() if target.startswith(prefix)), None)
        if lock is None:
            return app(environ, start_response)
        with lock:
            # Materialized inside the lock: the work happens while the body is produced.
            return list(app(environ, start_response))

    return wrapped


def stream_transactions_on_commit() -> None:
    """Patches moto's TransactWriteItems: it writes its stream records to a copy of each
    table's shard; they join the shard that readers hold when it commits, and a rollback
    leaves that shard as it was (and on the restored table)."""
    original = DynamoDBBackend.transact_write_items

    def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
        written = {op.get("TableName") for item in transact_items for op in item.values()}
        shards = {
            name: table.stream_shard
            for name, table in self.tables.items()
            if name in written and table.stream_shard is not None
        }
        for name, shard in shards.items():
            pending = copy.copy(shard)
            pending.items = list(shard.items)
            self.tables[name].stream_shard = pending
        committed = False
        try:
            original(self, transact_items)
            committed = True
        finally:
            for name, shard in shards.items():
                table = self.tables[name]  # the same table, or its restored copy
                if committed and table.stream_shard is not None:
                    shard.items.extend(table.stream_shard.items[len(shard.items) :])
                shard.table = table
                table.stream_shard = shard

    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def dump_stream_records_as_json() -> None:
    """Patches moto's GetRecords to answer with the records dumped as JSON."""

    def get_records(self: DynamoDBStreamsHandler) -> str:
        iterator = self._get_param("ShardIterator")
        limit = self._get_param("Limit") or 1000
        return dynamo_json_dump(self.backend.get_records(iterator, limit))

    DynamoDBStreamsHandler.get_records = get_records  # type: ignore[method-assign,assignment]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    # As moto's own main: some services build their URLs from it (SQS queue URLs).
    os.environ.setdefault("MOTO_PORT", str(args.port))
    stream_transactions_on_commit()
    dump_stream_records_as_json()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        serialize_requests(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
