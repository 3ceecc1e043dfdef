"""moto's server, with DynamoDB's per-request atomicity.

DynamoDB evaluates a ConditionExpression and applies its update as one atomic step, and an
UpdateItem's ADD or `SET a = a + :n` is atomic too; the cart's concurrency control rests
on that. moto's server handles requests on threads and checks a condition and then writes,
without a lock: measured with 64 concurrent AddItem calls on one cart line (conditional
nested ADD) and with TransactWriteItems guarded by a version, it lost 1-2 updates per run.
Taking one lock around each DynamoDB request restores what DynamoDB guarantees; every other
service is served concurrently as before.

Run as `python -m cloudshelf.devstack.aws_emulator -H HOST -p PORT`.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialize_dynamodb(app: WsgiApp) -> WsgiApp:
    """The app, with DynamoDB requests (X-Amz-Target DynamoDB_*) run one at a time."""
    lock = threading.Lock()

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
            return app(environ, start_response)
        with lock:
            # Materialized inside the lock: the work happens while the body is produced.
            return list(app(environ, start_response))

    return wrapped


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    # As moto's own main: some services build their URLs from it (SQS queue URLs).
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        serialize_dynamodb(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
