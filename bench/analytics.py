"""Analytics ingest benchmark (issue 19): interactions per second through RecordInteractions
and their lag until a consumer can read them from the Kinesis stream, over time.

    python -m bench.analytics --seconds 60 --clients 4     # the issue's 60 s

It starts its own PostgreSQL, AWS emulator and analytics service on free ports (state in
.state/bench-analytics-ingest, authentication off), then for --seconds: --clients loops
each send RecordInteractions batches of --batch interactions stamped with the time they
are sent, while a reader polls every shard with GetRecords as the consumer worker does.
Per second it records the events accepted, the events read and the lag of each one read
(read time minus the interaction's time); it prints the totals and percentiles, the CPU
time per 1,000 events of the analytics process (the pipeline) and of the emulator (its
share: where the emulator saturates first, the pipeline's own figure is what counts),
and draws throughput and lag over time into bench/results/analytics-<time>.png.

The stage measured ends in the stream: the warehouse stage (the consumer worker, another
stream of issue 19's work) is not part of this process yet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aioboto3
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from bench.harness import RESULTS, machine
from cloudshelf.analytics.v1 import analytics_pb2 as pb
from cloudshelf.analytics.v1 import analytics_pb2_grpc
from cloudshelf.devstack.stack import REPO_ROOT, Stack, StackPorts

STATE = REPO_ROOT / ".state" / "bench-analytics-ingest"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass
class Timeline:
    started: float
    accepted: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    read: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    lags: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))

    def second(self, moment: float) -> int:
        return int(moment - self.started)


def interactions(count: int, now: datetime) -> list[pb.Interaction]:
    stamp = Timestamp()
    stamp.FromDatetime(now)
    return [
        pb.Interaction(
            interaction_id=str(uuid.uuid4()),
            book_id=1 + n % 5000,
            user_id=f"user-{n % 997}",
            session_id=f"session-{n % 3001}",
            type=pb.INTERACTION_TYPE_VIEW,
            time=stamp,
            page_view_duration_seconds=n % 300,
            came_from="search",
            device_type="mobile",
        )
        for n in range(count)
    ]


async def send(address: str, batch: int, until: float, timeline: Timeline) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = analytics_pb2_grpc.AnalyticsServiceStub(channel)
        while time.time() < until:
            request = pb.RecordInteractionsRequest(
                interactions=interactions(batch, datetime.now(UTC))
            )
            answer = await stub.RecordInteractions(request, timeout=30)
            timeline.accepted[timeline.second(time.time())] += answer.accepted_count


async def read(kinesis: Any, stream: str, until: float, timeline: Timeline) -> None:
    shards = (await kinesis.list_shards(StreamName=stream))["Shards"]
    iterators = {}
    for shard in shards:
        answer = await kinesis.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="LATEST"
        )
        iterators[shard["ShardId"]] = answer["ShardIterator"]
    while time.time() < until:
        got = 0
        for shard_id, iterator in list(iterators.items()):
            answer = await kinesis.get_records(ShardIterator=iterator, Limit=10000)
            iterators[shard_id] = answer["NextShardIterator"]
            now = time.time()
            second = timeline.second(now)
            for record in answer["Records"]:
                envelope = json.loads(record["Data"])
                occurred = datetime.fromisoformat(envelope["occurred_at"].replace("Z", "+00:00"))
                timeline.lags[second].append(now - occurred.timestamp())
            timeline.read[second] += len(answer["Records"])
            got += len(answer["Records"])
        if not got:
            await asyncio.sleep(0.05)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def plot(timeline: Timeline, seconds: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = list(range(seconds))
    figure, (rate, lag) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    rate.plot(xs, [timeline.accepted.get(x, 0) for x in xs], label="accepted (RecordInteractions)")
    rate.plot(xs, [timeline.read.get(x, 0) for x in xs], label="read from the stream")
    rate.axhline(5000, color="grey", linestyle=":", label="target 5,000/s")
    rate.set_ylabel("events / s")
    rate.legend()
    lag.plot(xs, [percentile(timeline.lags.get(x, []), 0.5) for x in xs], label="lag p50")
    lag.plot(xs, [percentile(timeline.lags.get(x, []), 0.95) for x in xs], label="lag p95")
    lag.axhline(2, color="grey", linestyle=":", label="target p95 2 s")
    lag.set_ylabel("seconds")
    lag.set_xlabel("second of the run")
    lag.legend()
    figure.suptitle("RecordInteractions -> Kinesis stream (readable by a consumer)")
    figure.tight_layout()
    figure.savefig(path)


async def run(stack: Stack, seconds: int, clients: int, batch: int) -> None:
    settings = stack.settings("analytics")
    analytics_pid = stack.services["analytics"].pid
    emulator_pid = stack.aws.pid
    assert analytics_pid is not None and emulator_pid is not None
    session = aioboto3.Session(
        aws_access_key_id="local", aws_secret_access_key="local", region_name="us-east-1"
    )
    async with session.client("kinesis", endpoint_url=stack.aws.url) as kinesis:
        cpu_before = cpu_seconds(analytics_pid), cpu_seconds(emulator_pid)
        timeline = Timeline(started=time.time())
        until = timeline.started + seconds
        reader = asyncio.create_task(read(kinesis, settings.analytics_stream, until + 3, timeline))
        await asyncio.gather(
            *(send(stack.address("analytics"), batch, until, timeline) for _ in range(clients))
        )
        await reader
        cpu_after = cpu_seconds(analytics_pid), cpu_seconds(emulator_pid)
    accepted, got = sum(timeline.accepted.values()), sum(timeline.read.values())
    lags = [lag for values in timeline.lags.values() for lag in values]
    pipeline_cpu = cpu_after[0] - cpu_before[0]
    emulator_cpu = cpu_after[1] - cpu_before[1]
    figures = {
        "seconds": seconds,
        "clients": clients,
        "batch": batch,
        "accepted": accepted,
        "read": got,
        "accepted_per_second": round(accepted / seconds),
        "read_per_second": round(got / seconds),
        "lag_p50_s": round(percentile(lags, 0.5), 3),
        "lag_p95_s": round(percentile(lags, 0.95), 3),
        "lag_max_s": round(max(lags, default=0.0), 3),
        "lag_mean_s": round(statistics.fmean(lags), 3) if lags else 0.0,
        "pipeline_cpu_s_per_1000": round(1000 * pipeline_cpu / max(accepted, 1), 4),
        "emulator_cpu_s_per_1000": round(1000 * emulator_cpu / max(accepted, 1), 4),
        "emulator_share": round(emulator_cpu / max(pipeline_cpu + emulator_cpu, 1e-9), 3),
        # What the pipeline alone would sustain on the machine's cores at its CPU cost.
        "pipeline_alone_per_second_per_core": round(accepted / max(pipeline_cpu, 1e-9)),
    }
    RESULTS.mkdir(exist_ok=True)
    name = f"analytics-{time.strftime('%Y%m%d-%H%M%S')}"
    plot(timeline, seconds, str(RESULTS / f"{name}.png"))
    (RESULTS / f"{name}.json").write_text(
        json.dumps({"machine": machine(), "figures": figures}, indent=2)
    )
    for key, value in figures.items():
        print(f"{key:>36}: {value}")
    print(f"\nwritten: {RESULTS / name}.png and .json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    stack = Stack(
        STATE, StackPorts.free(), durable=False, extra_env={"CLOUDSHELF_AUTH_DISABLED": "true"}
    )
    try:
        stack.start_backing_servers()
        asyncio.run(stack.provision())
        stack.start_services(("analytics",))
        stack.wait_until_serving(("analytics",))
        asyncio.run(run(stack, args.seconds, args.clients, args.batch))
    finally:
        stack.down()


if __name__ == "__main__":
    main()
