"""Analytics pipeline benchmark (issue 19): interactions per second from RecordInteractions
to visible in the warehouse (analytics.fact_book_interactions), and the end-to-end lag,
sustained over time, with the CPU each part of the pipeline spends.

    python -m bench.analytics --seconds 60                 # the issue's 60 s, both paths
    python -m bench.analytics --seconds 20 --rate 3000     # a short look at a modest rate

It starts its own PostgreSQL, Redis, AWS emulator (moto), the analytics service and the
analytics consumer worker on free ports (state in .state/bench-analytics-pipeline), and
stops them. Two paths, measured one after the other in the same run on the same stack:

- `grpc`: --clients concurrent clients, each signed in as a `service` identity (the
  only role RecordInteractions admits), send RecordInteractions batches of --batch
  interactions, paced together to --rate events/s (0: as fast as the answers come);
- `stream`, the floor of the ingest path: the same `interaction.recorded` envelopes
  (records.encode, records.partition_key) put straight into the Kinesis stream with
  PutRecords from this process, so only the consumer worker stands between them and the
  warehouse. Run alone (`--paths stream`) when RecordInteractions is not served.

The interactions are of every kind with the fields each carries (14 views, 4 cart adds, 1
purchase, 1 review in 20), from ~1,000 users and ~3,000 sessions over 5,000 books.
Every interaction of a batch carries the batch's send time as its `time` (microseconds,
as PostgreSQL keeps it), so the warehouse's interaction_timestamp says when it was sent.
A watcher polls the warehouse every POLL_SECONDS for the rows of the send times not yet
complete (`GROUP BY interaction_timestamp` over the timestamp index, from the oldest
incomplete one): each row found new has lag = poll start - its send time. A row visible
to the poll's snapshot was committed before it, so a lag is at most POLL_SECONDS (plus
the query's own time) above the true one, never below.

Each path warms up for --warmup s (not counted) and drains, then is measured for
--seconds and drained again (at most --drain s). The CPU time (user + system, from
/proc/<pid>/stat) of the analytics server, the consumer worker, the emulator, PostgreSQL
(the postmaster and its backends) and this process is taken before and after the
measured part and divided by the events sent in it. The pipeline is the analytics server
and the consumer worker: what it alone sustains is events / its CPU seconds, per core
and on the machine's cores (the emulator shares them here; in AWS Kinesis, S3 and
Timestream run elsewhere).

The warehouse's hourly metrics query on 10M interactions (the issue's other figure) is
bench/analytics_metrics.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.harness import RESULTS, machine
from cloudshelf.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from cloudshelf.devstack.identity import SERVICE_GROUP
from cloudshelf.devstack.stack import REPO_ROOT, Stack, StackPorts
from cloudshelf.runtime.auth import AUTHORIZATION
from cloudshelf.runtime.stores import aws_session, open_aws_client
from services.analytics.consumer import WORKER_NAME
from services.analytics.ingest import interaction_envelope
from services.analytics.provision import STREAM_SHARDS
from services.analytics.records import encode

STATE = REPO_ROOT / ".state" / "bench-analytics-pipeline"
# Issue 19's targets.
TARGET_PER_SECOND = 5000
TARGET_LAG_P95_SECONDS = 2.0
POLL_SECONDS = 0.2
TICKS = os.sysconf("SC_CLK_TCK")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Kinesis' PutRecords cap; RecordInteractions takes at most as many.
MAX_BATCH = 500

PENDING_ROWS = """
SELECT interaction_timestamp, count(*) FROM analytics.fact_book_interactions
WHERE interaction_timestamp >= $1 GROUP BY 1
"""


# --- CPU time ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process so far (Linux /proc); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(parent: int) -> list[int]:
    """The processes whose parent is `parent` (PostgreSQL's backends of its postmaster)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


@dataclass
class CpuParts:
    """The processes whose CPU time is measured, by part."""

    parts: dict[str, list[int] | Callable[[], list[int]]]

    def snapshot(self) -> dict[str, dict[int, float]]:
        taken: dict[str, dict[int, float]] = {}
        for name, pids in self.parts.items():
            listed = pids() if callable(pids) else pids
            taken[name] = {pid: cpu_seconds(pid) for pid in listed}
        return taken

    @staticmethod
    def spent(
        before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]
    ) -> dict[str, float]:
        """Seconds per part between two snapshots; a process started in between counts from
        0 (a backend that ended in between is lost: the pools keep theirs open)."""
        return {
            name: sum(seconds - before[name].get(pid, 0.0) for pid, seconds in after[name].items())
            for name in after
        }


def postgres_pids(stack: Stack) -> Callable[[], list[int]]:
    postmaster = int((stack.postgres.data_dir / "postmaster.pid").read_text().split()[0])
    return lambda: [postmaster, *children(postmaster)]


# --- what is sent -----------------------------------------------------------------------------


def micros_now() -> int:
    return time.time_ns() // 1000


def stamp(micros: int) -> Timestamp:
    return Timestamp(seconds=micros // 1_000_000, nanos=(micros % 1_000_000) * 1000)


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


# One in 20 of each kind: 14 views, 4 cart adds, 1 purchase, 1 review (as in
# bench/analytics_metrics.py's generated facts).
KINDS = (
    [analytics_pb2.INTERACTION_TYPE_VIEW] * 14
    + [analytics_pb2.INTERACTION_TYPE_ADD_TO_CART] * 4
    + [analytics_pb2.INTERACTION_TYPE_PURCHASE, analytics_pb2.INTERACTION_TYPE_REVIEW]
)
PRICED = (analytics_pb2.INTERACTION_TYPE_ADD_TO_CART, analytics_pb2.INTERACTION_TYPE_PURCHASE)


def interaction(n: int, when: Timestamp) -> analytics_pb2.Interaction:
    """The `n`th interaction of a run: many visitors (partition keys over every shard),
    5,000 books, every kind with the fields it carries."""
    kind = KINDS[n % len(KINDS)]
    one = analytics_pb2.Interaction(
        interaction_id=str(uuid.uuid4()),
        book_id=1 + n % 5000,
        user_id=f"bench-user-{n % 997}" if n % 3 else "",
        session_id=f"bench-session-{n % 3001}",
        type=kind,
        time=when,
        came_from=("search", "category", "recommendation")[n % 3],
        device_type=("desktop", "mobile", "tablet")[n % 3],
        user_location="Lisbon, PT",
    )
    if kind == analytics_pb2.INTERACTION_TYPE_VIEW:
        one.page_view_duration_seconds = n % 300
    elif kind in PRICED:
        one.value.currency_code = "USD"
        one.value.minor_units = 500 + n % 4000
    else:
        one.rating = 1 + n % 5
    return one


def interactions(count: int, sent_micros: int, first: int) -> list[analytics_pb2.Interaction]:
    """`count` interactions stamped with their send time."""
    when = stamp(sent_micros)
    return [interaction(first + n, when) for n in range(count)]


def interaction_record(one: analytics_pb2.Interaction) -> dict[str, Any]:
    """The PutRecords entry RecordInteractions makes of an interaction: its
    `interaction.recorded` envelope and partition key, built by the service's own code
    (without a trace context)."""
    envelope, key = interaction_envelope(one, {})
    return {"Data": encode(envelope), "PartitionKey": key}


# --- one path's timeline ----------------------------------------------------------------------


@dataclass
class Timeline:
    """What was sent and when it became visible, by send time (microseconds)."""

    sent: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    seen: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    pending: set[int] = field(default_factory=set)
    # By whole second since `started`: events answered, events made visible, their lags.
    started: float = 0.0
    accepted: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    visible: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    lags: dict[int, list[tuple[float, int]]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def second(self, moment: float) -> int:
        return int(moment - self.started)

    def sending(self, micros: int, count: int) -> None:
        self.sent[micros] += count
        self.pending.add(micros)

    def refused(self, micros: int, count: int, why: str) -> None:
        self.sent[micros] -= count
        self.errors[why] += count
        if self.seen[micros] >= self.sent[micros]:
            self.pending.discard(micros)

    def answered(self, count: int) -> None:
        self.accepted[self.second(time.time())] += count


Send = Callable[[list[analytics_pb2.Interaction]], Awaitable[None]]


async def client(
    send: Send,
    timeline: Timeline,
    batch: int,
    interval: float,
    until: float,
    offset: int,
    delay: float,
) -> None:
    """Sends a batch every `interval` s (at once when behind), from `delay` s on, until
    `until`."""
    next_at = time.time() + delay
    sent = 0
    while time.time() < until:
        now = time.time()
        if next_at > now:
            await asyncio.sleep(next_at - now)
            if time.time() >= until:
                break
        next_at = max(time.time(), next_at + interval)
        micros = micros_now()
        timeline.sending(micros, batch)
        try:
            await send(interactions(batch, micros, offset + sent))
        except Exception as exc:  # a refused batch is counted, the run goes on
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
            timeline.refused(micros, batch, code)
            continue
        timeline.answered(batch)
        sent += batch


async def watch(conn: asyncpg.Connection, timeline: Timeline, stop: asyncio.Event) -> None:
    """Polls the warehouse for the rows of the send times still incomplete, until `stop`
    is set and none is."""
    while not (stop.is_set() and not timeline.pending):
        polled = time.time()
        if timeline.pending:
            rows = await conn.fetch(PENDING_ROWS, from_micros(min(timeline.pending)))
            for row in rows:
                micros = to_micros(row[0])
                if micros not in timeline.sent:
                    continue  # an earlier part's send time
                new = row[1] - timeline.seen[micros]
                if new <= 0:
                    continue
                timeline.seen[micros] = row[1]
                second = timeline.second(polled)
                timeline.visible[second] += new
                timeline.lags[second].append((polled - micros / 1e6, new))
                if timeline.seen[micros] >= timeline.sent[micros]:
                    timeline.pending.discard(micros)
        await asyncio.sleep(max(0.0, polled + POLL_SECONDS - time.time()))


async def drive(
    send: Send,
    conn: asyncpg.Connection,
    clients: int,
    batch: int,
    rate: int,
    seconds: float,
    drain: float,
) -> tuple[Timeline, float]:
    """Sends for `seconds`, then waits at most `drain` s for every event to be visible;
    the timeline and the seconds the drain took (inf when it did not end)."""
    timeline = Timeline(started=time.time())
    interval = clients * batch / rate if rate > 0 else 0.0
    until = timeline.started + seconds
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(conn, timeline, stop))
    await asyncio.gather(
        *(
            # Started apart, so the clients' batches are spread over the interval.
            client(send, timeline, batch, interval, until, c * 1_000_000, c * interval / clients)
            for c in range(clients)
        )
    )
    sent_end = time.time()
    stop.set()
    try:
        await asyncio.wait_for(asyncio.shield(watcher), drain)
        drained = time.time() - sent_end
    except TimeoutError:
        watcher.cancel()
        drained = float("inf")
    return timeline, drained


# --- the paths --------------------------------------------------------------------------------


def grpc_sender(address: str, token: str) -> tuple[Send, grpc.aio.Channel]:
    channel = grpc.aio.insecure_channel(address)
    stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
    metadata = ((AUTHORIZATION, f"Bearer {token}"),)

    async def send(batch: list[analytics_pb2.Interaction]) -> None:
        request = analytics_pb2.RecordInteractionsRequest(
            interactions=batch, request_id=str(uuid.uuid4())
        )
        answer = await stub.RecordInteractions(request, metadata=metadata, timeout=30)
        assert answer.accepted_count == len(batch), answer

    return send, channel


def stream_sender(kinesis: Any, stream: str) -> Send:
    async def send(batch: list[analytics_pb2.Interaction]) -> None:
        records = [interaction_record(one) for one in batch]
        for _ in range(10):
            answer = await kinesis.put_records(StreamName=stream, Records=records)
            if not answer.get("FailedRecordCount"):
                return
            # Only the failed ones again (throttled), as the service's stream writer does.
            records = [
                r
                for r, result in zip(records, answer["Records"], strict=True)
                if "ErrorCode" in result
            ]
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{len(records)} records refused 10 times")

    return send


async def served(send: Send) -> str:
    """'' when RecordInteractions answers a one-interaction call, else why not."""
    try:
        await send(interactions(1, micros_now(), 0))
    except grpc.aio.AioRpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return ""


# --- figures ----------------------------------------------------------------------------------


def weighted_percentile(lags: list[tuple[float, int]], q: float) -> float:
    if not lags:
        return float("nan")
    ordered = sorted(lags)
    total = sum(count for _, count in ordered)
    rank = q * total
    running = 0
    for lag, count in ordered:
        running += count
        if running > rank:
            return lag
    return ordered[-1][0]


def figures(
    path: str,
    timeline: Timeline,
    seconds: float,
    drained: float,
    cpu: dict[str, float],
    loads: tuple[float, float],
) -> dict[str, Any]:
    sent = sum(timeline.accepted.values())
    visible = sum(timeline.visible.values())
    in_window = sum(n for s, n in timeline.visible.items() if s < seconds)
    lags = [pair for values in timeline.lags.values() for pair in values]
    pipeline = cpu["server"] + cpu["worker"]
    measured = sum(cpu.values())
    per_1000 = {
        f"cpu_s_per_1000 {name}": 1000 * spent / max(sent, 1) for name, spent in cpu.items()
    }
    alone = sent / pipeline if pipeline > 0 else float("inf")
    lag_p95 = weighted_percentile(lags, 0.95)
    visible_per_second = in_window / seconds
    return {
        "path": path,
        "seconds": seconds,
        "sent": sent,
        "visible": visible,
        "refused": dict(timeline.errors),
        "sent_per_second": sent / seconds,
        # Rows made visible while sending, over the sending time: what the warehouse kept up.
        "visible_per_second_while_sending": visible_per_second,
        "drain_seconds_after_last_send": drained,
        "lag_p50_s": weighted_percentile(lags, 0.50),
        "lag_p95_s": lag_p95,
        "lag_p99_s": weighted_percentile(lags, 0.99),
        "lag_max_s": max((lag for lag, _ in lags), default=float("nan")),
        "lag_mean_s": (
            statistics.fmean([lag for lag, _ in lags], weights=[n for _, n in lags])
            if lags
            else float("nan")
        ),
        **per_1000,
        "cpu_s_per_1000 pipeline": 1000 * pipeline / max(sent, 1),
        "emulator_share_of_measured_cpu": cpu["moto"] / measured if measured else 0.0,
        "pipeline_alone_events_per_cpu_second": alone,
        "pipeline_alone_events_per_second_on_all_cores": alone * (os.cpu_count() or 1),
        "meets_throughput": visible_per_second >= TARGET_PER_SECOND,
        "meets_lag": lag_p95 < TARGET_LAG_P95_SECONDS,
        "pipeline_alone_meets_throughput": alone * (os.cpu_count() or 1) >= TARGET_PER_SECOND,
        # The warehouse's own work counted in (PostgreSQL is a store, like the emulator's
        # services, but one the pipeline keeps busy on these cores in production too).
        "pipeline_with_postgres_events_per_second_on_all_cores": (
            sent / (pipeline + cpu["postgres"]) * (os.cpu_count() or 1)
            if pipeline + cpu["postgres"] > 0
            else float("inf")
        ),
        "load_average_1min_start_end": f"{loads[0]:.1f}/{loads[1]:.1f}",
    }


def print_table(
    results: list[dict[str, Any]], context: dict[str, object], notes: list[str]
) -> None:
    print("\nanalytics  " + "  ".join(f"{k}={v}" for k, v in {**machine(), **context}.items()))
    header = (
        f"{'path':<34}{'sent/s':>8}{'visible/s':>10}{'lag p50':>9}{'p95':>7}{'p99':>7}"
        f"{'max':>7}{'drain s':>8}   target"
    )
    print(header)
    print("-" * (len(header) + 40))
    # Worst first: the lowest visible rate.
    for r in sorted(results, key=lambda r: r["visible_per_second_while_sending"]):
        verdict = (
            f"{'meets' if r['meets_throughput'] else 'MISSES'} >= {TARGET_PER_SECOND}/s, "
            f"{'meets' if r['meets_lag'] else 'MISSES'} p95 < {TARGET_LAG_P95_SECONDS:g} s"
        )
        print(
            f"{r['path']:<34}{r['sent_per_second']:>8.0f}"
            f"{r['visible_per_second_while_sending']:>10.0f}{r['lag_p50_s']:>9.2f}"
            f"{r['lag_p95_s']:>7.2f}{r['lag_p99_s']:>7.2f}{r['lag_max_s']:>7.2f}"
            f"{r['drain_seconds_after_last_send']:>8.1f}   {verdict}"
        )
    print(
        "\nCPU seconds per 1,000 events, measured part (/proc/<pid>/stat user + system): "
        "server = analytics service, worker = consumer worker, pipeline = both, moto = the "
        "AWS emulator, postgres = postmaster + backends, bench = this process"
    )
    parts = [k for k in results[0] if k.startswith("cpu_s_per_1000 ")]
    print(f"{'path':<34}" + "".join(f"{k.removeprefix('cpu_s_per_1000 '):>10}" for k in parts))
    for r in results:
        print(f"{r['path']:<34}" + "".join(f"{r[k]:>10.3f}" for k in parts))
    for r in results:
        print(
            f"  {r['path']}: emulator {100 * r['emulator_share_of_measured_cpu']:.0f}% of the "
            f"measured CPU; the pipeline alone (server + worker) sustains "
            f"{r['pipeline_alone_events_per_cpu_second']:.0f} events per CPU second, "
            f"{r['pipeline_alone_events_per_second_on_all_cores']:.0f}/s on {os.cpu_count()} "
            f"cores ({'meets' if r['pipeline_alone_meets_throughput'] else 'MISSES'} "
            f">= {TARGET_PER_SECOND}/s); with PostgreSQL's CPU counted in "
            f"{r['pipeline_with_postgres_events_per_second_on_all_cores']:.0f}/s; "
            f"refused: {r['refused'] or 'none'}"
        )
    for note in notes:
        print(f"  note: {note}")


def plot(parts: list[tuple[str, Timeline, float]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, len(parts), figsize=(7 * len(parts), 7), squeeze=False)
    for column, (path, timeline, seconds) in enumerate(parts):
        last = max([*timeline.visible, *timeline.accepted, int(seconds)]) + 1
        xs = list(range(last))
        rate, lag = axes[0][column], axes[1][column]
        rate.plot(xs, [timeline.accepted.get(x, 0) for x in xs], label="sent (answered)")
        rate.plot(xs, [timeline.visible.get(x, 0) for x in xs], label="visible in the warehouse")
        rate.axhline(TARGET_PER_SECOND, color="grey", linestyle=":", label="target 5,000/s")
        rate.axvline(seconds, color="black", linewidth=0.5, label="sending ends")
        rate.set_ylabel("events / s")
        rate.set_title(path)
        rate.legend(fontsize="small")
        for q, name in ((0.5, "p50"), (0.95, "p95"), (1.0, "max")):
            lag.plot(
                xs,
                [
                    weighted_percentile(timeline.lags[x], q)
                    if timeline.lags.get(x)
                    else float("nan")
                    for x in xs
                ],
                label=f"lag {name}",
                marker=".",
            )
        lag.axhline(TARGET_LAG_P95_SECONDS, color="grey", linestyle=":", label="target p95 2 s")
        lag.set_ylabel("send -> visible, s (by second it became visible)")
        lag.set_xlabel("second of the measured part")
        lag.legend(fontsize="small")
    figure.suptitle("Analytics: interactions into the warehouse (analytics.fact_book_interactions)")
    figure.tight_layout()
    figure.savefig(out)


# --- the run ----------------------------------------------------------------------------------


async def run(stack: Stack, args: argparse.Namespace) -> None:
    settings = stack.settings("analytics")
    name = f"bench-service-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(stack.identity.ensure_user, name, [SERVICE_GROUP])
    token = await asyncio.to_thread(stack.identity.token, name)
    server_pid = stack.services["analytics"].pid
    worker_pid = stack.workers[WORKER_NAME].pid
    emulator_pid = stack.aws.pid
    assert server_pid and worker_pid and emulator_pid
    meter = CpuParts(
        {
            "server": [server_pid],
            "worker": [worker_pid],
            "moto": [emulator_pid],
            "postgres": postgres_pids(stack),
            "bench": [os.getpid()],
        }
    )
    notes = [
        f"lag: poll start - send time, polled every {POLL_SECONDS} s: at most that (plus "
        "the query's time) above the true lag",
        "the warehouse's hourly metrics query on 10M interactions (time and plan): "
        "python -m bench.analytics_metrics --interactions 10000000",
    ]
    results: list[dict[str, Any]] = []
    timelines: list[tuple[str, Timeline, float]] = []
    async with AsyncExitStack() as exits:
        kinesis = await open_aws_client(aws_session(settings), exits, "kinesis", settings)
        conn = await asyncpg.connect(stack.postgres.dsn("analytics"))
        exits.push_async_callback(conn.close)
        grpc_send, channel = grpc_sender(stack.address("analytics"), token)
        exits.push_async_callback(channel.close)
        senders: dict[str, Send] = {}
        if "grpc" in args.paths:
            why_not = await served(grpc_send)
            if why_not:
                notes.append(f"RecordInteractions not measured: {why_not}")
            else:
                senders[f"grpc RecordInteractions x{args.clients}"] = grpc_send
        if "stream" in args.paths:
            senders["floor: PutRecords straight to stream"] = stream_sender(
                kinesis, settings.analytics_stream
            )
        for path, send in senders.items():
            print(f"{path}: warming up {args.warmup} s ...", flush=True)
            await drive(send, conn, args.clients, args.batch, args.rate, args.warmup, args.drain)
            print(f"{path}: measuring {args.seconds} s ...", flush=True)
            load_start = os.getloadavg()[0]
            before = meter.snapshot()
            timeline, drained = await drive(
                send, conn, args.clients, args.batch, args.rate, args.seconds, args.drain
            )
            cpu = CpuParts.spent(before, meter.snapshot())
            results.append(
                figures(
                    path, timeline, args.seconds, drained, cpu, (load_start, os.getloadavg()[0])
                )
            )
            timelines.append((path, timeline, args.seconds))
    if not results:
        print("nothing measured:", *notes, sep="\n  ")
        return
    context: dict[str, object] = {
        "clients": args.clients,
        "batch": args.batch,
        "rate_asked": args.rate or "max",
        "seconds": args.seconds,
        "shards": STREAM_SHARDS,
        **{package: version(package) for package in ("moto", "grpcio", "aioboto3", "asyncpg")},
    }
    print_table(results, context, notes)
    RESULTS.mkdir(exist_ok=True)
    stem = RESULTS / f"analytics-{time.strftime('%Y%m%d-%H%M%S')}"
    plot(timelines, stem.with_suffix(".png"))
    stem.with_suffix(".json").write_text(
        json.dumps(
            {"machine": machine(), "context": context, "notes": notes, "paths": results},
            indent=2,
            default=str,
        )
    )
    print(f"\nwritten: {stem}.png and {stem}.json")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60, help="measured sending time")
    parser.add_argument("--warmup", type=float, default=5, help="sending time not counted")
    parser.add_argument("--drain", type=float, default=60, help="most seconds to wait for rows")
    parser.add_argument("--clients", type=int, default=4, help="concurrent senders")
    parser.add_argument("--batch", type=int, default=MAX_BATCH, help="interactions per call")
    parser.add_argument(
        "--rate", type=int, default=TARGET_PER_SECOND, help="events/s asked of all clients (0: max)"
    )
    parser.add_argument(
        "--paths",
        default="grpc,stream",
        help="grpc (RecordInteractions), stream (the floor: PutRecords from here), or both",
    )
    args = parser.parse_args()
    if not 1 <= args.batch <= MAX_BATCH:
        parser.error(f"--batch is 1..{MAX_BATCH}")
    args.paths = set(args.paths.split(","))
    return args


def main() -> None:
    args = parse_args()
    # A fresh stack each run: the emulator's stream starts again at sequence number 1, and
    # the consumer's checkpoints kept in an older warehouse would skip that many records.
    shutil.rmtree(STATE, ignore_errors=True)
    stack = Stack(STATE, StackPorts.free(), durable=False)
    try:
        stack.start_backing_servers()
        asyncio.run(stack.provision())
        stack.start_services(("analytics",))
        stack.wait_until_serving(("analytics",), timeout=120)
        stack.start_workers()
        stack.wait_until_workers_serve(timeout=120)
        asyncio.run(run(stack, args))
    finally:
        stack.down()


if __name__ == "__main__":
    main()
