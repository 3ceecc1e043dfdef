"""`cloudshelf`: the local stack, migrations, provisioning, demo data and jobs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import asyncpg

from cloudshelf.devstack.identity import ADMIN_GROUP, ADMIN_USER, SHOPPER_USER
from cloudshelf.devstack.stack import (
    POSTGRES_SERVICES,
    REPO_ROOT,
    SERVICES,
    Stack,
    health_status,
)
from cloudshelf.runtime.config import Settings
from cloudshelf.runtime.events import OutboxTables, list_dead_letters, replay_dead_letter
from cloudshelf.runtime.idempotency import prune_expired_keys
from cloudshelf.runtime.migrations import MigrationError, runner_for
from cloudshelf.runtime.stores import init_postgres_connection, open_postgres

STATE_DIR = REPO_ROOT / ".state"
TOKEN_COMMAND = ".venv/bin/cloudshelf token --user NAME [--admin]"
# Services with an outbox: each has services/<name>/outbox.py defining OUTBOX.
OUTBOX_SERVICES = [
    name for name in POSTGRES_SERVICES if importlib.util.find_spec(f"services.{name}.outbox")
]


def _status_line(stack: Stack, service: str) -> str:
    status = stack.health(service)
    failing = stack.failing_dependencies(service) if status != "UNREACHABLE" else []
    note = f" (degraded: {', '.join(failing)})" if failing and status == "SERVING" else ""
    note = f" (failing: {', '.join(failing)})" if failing and status != "SERVING" else note
    return f"{service:<11} {stack.address(service):<16} {status}{note}"


def _worker_lines(stack: Stack) -> list[str]:
    return [
        f"{name:<11} {stack.worker_address(name):<16} {health_status(stack.worker_address(name))}"
        for name in stack.workers
    ]


def local_up(state_dir: Path) -> int:
    started = time.monotonic()
    stack = Stack.load(state_dir)
    print("starting PostgreSQL, Redis and the AWS emulator on 127.0.0.1 ...", flush=True)
    for line in stack.up():
        print(f"  {line}")
    print(f"\nCloudShelf is up in {time.monotonic() - started:.1f}s:\n")
    for line in [*(_status_line(stack, s) for s in SERVICES), *_worker_lines(stack)]:
        print("  " + line)
    print(f"\n  postgres    {stack.postgres.dsn('<service>')}")
    print(f"  redis       {stack.redis.url}")
    print(f"  aws         {stack.aws.url}  (AWS_ENDPOINT_URL)")
    shopper = stack.identity.token(SHOPPER_USER)
    admin = stack.identity.token(ADMIN_USER)
    print(f"\nTokens (Cognito on the emulator, valid 1 h; more: {TOKEN_COMMAND}):\n")
    print(f"  {SHOPPER_USER} (shopper):\n    {shopper}")
    print(f"  {ADMIN_USER} (admin):\n    {admin}")
    curl = ".venv/bin/buf curl --protocol grpc --http2-prior-knowledge"
    print("\nTry (server reflection, no proto files needed):\n")
    print(
        f"  {curl} -H 'authorization: Bearer {shopper}' -d '{{}}' "
        f"http://{stack.address('storefront')}/cloudshelf.storefront.v1.StorefrontService/GetCartView\n"
    )
    print(
        f"  {curl} -H 'authorization: Bearer {admin}' "
        '-d \'{"author": {"first_name": "Ursula", "last_name": "Le Guin"}}\' '
        f"http://{stack.address('catalog')}/cloudshelf.catalog.v1.CatalogService/CreateAuthor\n"
    )
    print(f"  {curl} --list-methods http://{stack.address('catalog')}")
    print(f"\nLogs: make logs ({state_dir / 'logs'})   Stop: make down")
    return 0


def local_token(state_dir: Path, user: str, admin: bool) -> int:
    """Prints an access token of a user of the local stack's pool, creating the user (a
    shopper; with --admin, also in the admins group) when new. Local only: it talks to the
    stack's own emulator and refuses anything else."""
    stack = Stack.load(state_dir)
    identity = stack.identity
    if not identity.is_local() or not identity.pool_id or not stack.aws.running():
        print(
            "cloudshelf token works with the local stack only, and it is not running "
            "(make up); for a real pool, sign in through its hosted UI or SDK",
            file=sys.stderr,
        )
        return 1
    identity.ensure_user(user, [ADMIN_GROUP] if admin else [])
    print(identity.token(user))
    return 0


def local_down(state_dir: Path) -> int:
    Stack.load(state_dir).down()
    print("CloudShelf local stack stopped.")
    return 0


def local_status(state_dir: Path) -> int:
    stack = Stack.load(state_dir)
    lines = [*(_status_line(stack, service) for service in SERVICES), *_worker_lines(stack)]
    print("\n".join(lines))
    return 0 if all(" SERVING" in line for line in lines) else 1


def migrate(service: str | None, action: str, version: int | None) -> int:
    """`status` and `up` act on every service with a database unless `--service` names one;
    `down` and `to` change one service's schema only, so they require `--service`."""
    if action in ("down", "to") and service is None:
        print(
            f"cloudshelf migrate {action} changes one service's schema: name it with --service "
            f"({', '.join(POSTGRES_SERVICES)})",
            file=sys.stderr,
        )
        return 2
    failed = False
    for name in [service] if service else list(POSTGRES_SERVICES):
        runner = runner_for(Settings.from_env(name).postgres_dsn, f"services.{name}")
        try:
            if action == "status":
                for state in asyncio.run(runner.status()):
                    applied = state.applied_at.isoformat() if state.applied_at else "pending"
                    m = state.migration
                    print(f"{name:<11} {m.version:<10} {m.description:<40} {applied}")
                continue
            if action == "up":
                done = asyncio.run(runner.up())
            elif action == "down":
                done = asyncio.run(runner.down())
            else:
                done = asyncio.run(runner.to(version))
        except OSError as exc:
            # One unreachable database (e.g. a pod that holds only its own service's
            # CLOUDSHELF_<SERVICE>_POSTGRES_DSN) must not hide the others' status.
            print(
                f"{name}: cannot reach its database ({exc}); "
                f"set CLOUDSHELF_{name.upper()}_POSTGRES_DSN",
                file=sys.stderr,
            )
            failed = True
            continue
        for line in done or ["nothing to do"]:
            print(f"{name}: {line}")
    return 1 if failed else 0


def provision(service: str | None) -> int:
    for name in [service] if service else list(SERVICES):
        module = importlib.import_module(f"services.{name}.provision")
        for line in asyncio.run(module.provision(Settings.from_env(name))):
            print(f"{name}: {line}")
    return 0


def seed(books: int) -> int:
    try:
        from services.catalog.demo import seed_catalog
    except ModuleNotFoundError as exc:
        if exc.name != "services.catalog.demo":
            raise
        # The Docker image leaves the demo data out (.dockerignore).
        print(
            "seed: no demo data in this installation; run it from a source checkout",
            file=sys.stderr,
        )
        return 2
    report = asyncio.run(seed_catalog(Settings.from_env("catalog").postgres_dsn, books))
    print(report)
    return 0


# Analytics jobs and the options each takes (the catalog's take none).
ANALYTICS_JOBS = {
    "hourly-metrics": {"hour", "hours"},
    "extend-dim-time": {"years"},
    "compact-lake": {"hour", "hours"},
}


def analytics_job(name: str, hour: str | None, hours: int | None, years: int | None) -> int:
    from services.analytics import jobs
    from services.analytics.metrics import parse_hour

    try:
        start = parse_hour(hour) if hour else None
        settings = Settings.from_env("analytics")
        if name == "hourly-metrics":
            run = jobs.run_hourly_metrics(
                settings, start, jobs.METRICS_HOURS if hours is None else hours
            )
        elif name == "extend-dim-time":
            run = jobs.run_extend_dim_time(
                settings, jobs.DIM_TIME_YEARS if years is None else years
            )
        else:
            run = jobs.run_compact_lake(
                settings, start, jobs.COMPACT_HOURS if hours is None else hours
            )
        print(asyncio.run(run))
    except ValueError as exc:
        print(f"cloudshelf job {name}: {exc}", file=sys.stderr)
        return 2
    return 0


# The request_id keys (AIP-155) of each PostgreSQL service that keeps them.
IDEMPOTENCY_KEY_TABLES = {
    "catalog": "book_catalog.idempotency_keys",
    "storefront": "storefront.idempotency_keys",
    "analytics": "analytics.idempotency_keys",
}


def prune_idempotency_keys(service: str) -> int:
    """Deletes a service's expired request_id keys (they already count as absent)."""

    async def run() -> int:
        async with AsyncExitStack() as stack:
            pool, _ = await open_postgres(Settings.from_env(service), stack)
            return await prune_expired_keys(pool, IDEMPOTENCY_KEY_TABLES[service])

    print(f"{service}: idempotency keys pruned: {asyncio.run(run())} expired")
    return 0


def job(
    name: str,
    hour: str | None = None,
    hours: int | None = None,
    years: int | None = None,
    service: str | None = None,
) -> int:
    if service is not None and name != "prune-idempotency-keys":
        print(f"cloudshelf job {name} takes no --service", file=sys.stderr)
        return 2
    if name == "prune-idempotency-keys":
        return prune_idempotency_keys(service or "catalog")
    given = {o for o, v in (("hour", hour), ("hours", hours), ("years", years)) if v is not None}
    if given - ANALYTICS_JOBS.get(name, set()):
        flags = ", ".join(f"--{o}" for o in sorted(given - ANALYTICS_JOBS.get(name, set())))
        print(f"cloudshelf job {name} takes no {flags}", file=sys.stderr)
        return 2
    if name in ANALYTICS_JOBS:
        return analytics_job(name, hour, hours, years)
    from services.catalog import jobs

    run = {
        "refresh-popular": jobs.run_refresh_popular,
        "warm-cache": jobs.run_warm_cache,
        "fold-spelling": jobs.run_fold_spelling,
    }[name]
    print(asyncio.run(run(Settings.from_env("catalog"))))
    return 0


def _outbox_of(service: str) -> OutboxTables:
    tables: OutboxTables = importlib.import_module(f"services.{service}.outbox").OUTBOX
    return tables


@contextlib.asynccontextmanager
async def _database(service: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(Settings.from_env(service).postgres_dsn)
    try:
        await init_postgres_connection(conn)
        yield conn
    finally:
        await conn.close()


def outbox_dead_letters(service: str, limit: int) -> int:
    """Lists the events the relay gave up on, oldest first, with the reason."""

    async def run() -> int:
        async with _database(service) as conn:
            letters = await list_dead_letters(conn, _outbox_of(service), limit)
        for d in letters:
            print(
                f"{d.id}  {d.event_type}  subject={d.subject} version={d.aggregate_version} "
                f"attempts={d.attempts} dead_at={d.dead_at.isoformat(timespec='seconds')}  "
                f"{d.reason}"
            )
        if not letters:
            print(f"{service}: no dead letters")
        return 0

    return asyncio.run(run())


def outbox_replay(service: str, event_id: str) -> int:
    """Moves one dead letter back to the outbox; the relay sends it on its next round."""
    try:
        uuid.UUID(event_id)
    except ValueError:
        print(f"not an event id (a UUID): {event_id!r}", file=sys.stderr)
        return 2

    async def run() -> int:
        async with _database(service) as conn:
            moved = await replay_dead_letter(conn, _outbox_of(service), event_id)
        if not moved:
            print(f"{service}: no dead letter {event_id}", file=sys.stderr)
            return 1
        print(f"{service}: {event_id} is back in the outbox; the relay sends it next round")
        return 0

    return asyncio.run(run())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloudshelf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="the local stack on 127.0.0.1")
    local.add_argument("action", choices=["up", "down", "status"])
    local.add_argument("--state-dir", type=Path, default=STATE_DIR)

    token = commands.add_parser(
        "token", help="print an access token of a local user (local stack only)"
    )
    token.add_argument("--user", required=True, help="user name; created (a shopper) if new")
    token.add_argument("--admin", action="store_true", help="also in the admins group")
    token.add_argument("--state-dir", type=Path, default=STATE_DIR)

    mig = commands.add_parser("migrate", help="PostgreSQL schema migrations")
    mig.add_argument("action", choices=["status", "up", "down", "to"])
    mig.add_argument("version", nargs="?", type=int, help="target version for `to` (0: none)")
    mig.add_argument(
        "--service",
        choices=POSTGRES_SERVICES,
        help="one service (required by down and to; status and up default to all)",
    )

    prov = commands.add_parser("provision", help="create schemas, tables, streams, buckets")
    prov.add_argument("--service", choices=SERVICES)

    demo = commands.add_parser("seed", help="add a realistic demo catalog (COPY)")
    demo.add_argument("--books", type=int, default=1000)

    jobs = commands.add_parser("job", help="run a catalog or analytics job once")
    jobs.add_argument(
        "name",
        choices=[
            "refresh-popular",
            "warm-cache",
            "fold-spelling",
            "prune-idempotency-keys",
            *ANALYTICS_JOBS,
        ],
    )
    jobs.add_argument(
        "--hour", help="hourly-metrics, compact-lake: an hour, e.g. 2026-11-26T04:00Z"
    )
    jobs.add_argument(
        "--hours",
        type=int,
        help="hourly-metrics, compact-lake: how many hours up to --hour (default 3)",
    )
    jobs.add_argument("--years", type=int, help="extend-dim-time: years ahead of this one")
    jobs.add_argument(
        "--service",
        choices=sorted(IDEMPOTENCY_KEY_TABLES),
        help="prune-idempotency-keys: whose keys (default catalog)",
    )

    outbox = commands.add_parser("outbox", help="events the outbox relay could not deliver")
    outbox_actions = outbox.add_subparsers(dest="action", required=True)
    letters = outbox_actions.add_parser("dead-letters", help="list them with their reason")
    letters.add_argument("--service", choices=OUTBOX_SERVICES, required=True)
    letters.add_argument("--limit", type=int, default=100)
    replay = outbox_actions.add_parser("replay", help="send one again (back to the outbox)")
    replay.add_argument("id", help="the event id, as listed by dead-letters")
    replay.add_argument("--service", choices=OUTBOX_SERVICES, required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "local":
            action = {"up": local_up, "down": local_down, "status": local_status}[args.action]
            return action(args.state_dir)
        if args.command == "token":
            return local_token(args.state_dir, args.user, args.admin)
        if args.command == "migrate":
            if args.action == "to" and args.version is None:
                print("cloudshelf migrate to VERSION: give a version", file=sys.stderr)
                return 2
            return migrate(args.service, args.action, args.version)
        if args.command == "provision":
            return provision(args.service)
        if args.command == "seed":
            return seed(args.books)
        if args.command == "job":
            return job(args.name, args.hour, args.hours, args.years, args.service)
        if args.command == "outbox":
            if args.action == "replay":
                return outbox_replay(args.service, args.id)
            return outbox_dead_letters(args.service, args.limit)
    except MigrationError as exc:
        print(f"migration refused: {exc}", file=sys.stderr)
        return 1
    return 2


if __name__ == "__main__":
    sys.exit(main())
