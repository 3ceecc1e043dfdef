"""Shared benchmark plumbing: timing loops, percentiles, the report table and JSON."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


@dataclass
class Figures:
    case: str
    calls: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    per_second: float


async def measure(
    case: str,
    call: Callable[[int], Awaitable[object]],
    *,
    calls: int,
    warmup: int = 20,
    max_seconds: float = 60.0,
    before_each: Callable[[int], Awaitable[object]] | None = None,
) -> Figures:
    """Times `call(i)` sequentially; `before_each(i)` runs outside the timed part."""
    for i in range(warmup):
        if before_each:
            await before_each(i)
        await call(i)
    samples: list[float] = []
    started = time.perf_counter()
    for i in range(calls):
        if before_each:
            await before_each(i)
        t0 = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - t0)
        if time.perf_counter() - started > max_seconds:
            break
    return figures_of(case, samples)


async def measure_in_turns(
    cases: dict[str, Callable[[int], Awaitable[object]]],
    *,
    calls: int,
    warmup: int = 20,
    max_seconds: float = 60.0,
) -> list[Figures]:
    """Times several cases in turns, one call of each per round, so that the machine's
    noise falls on all of them alike: their ratios are the figures to trust."""
    for i in range(warmup):
        for call in cases.values():
            await call(i)
    samples: dict[str, list[float]] = {case: [] for case in cases}
    started = time.perf_counter()
    for i in range(calls):
        for case, call in cases.items():
            t0 = time.perf_counter()
            await call(i)
            samples[case].append(time.perf_counter() - t0)
        if time.perf_counter() - started > max_seconds:
            break
    return [figures_of(case, times) for case, times in samples.items()]


async def measure_concurrently_in_turns(
    cases: dict[str, Callable[[int, int], Awaitable[object]]],
    *,
    clients: int,
    calls: int,
    slice_calls: int = 4,
    warmup_rounds: int = 2,
    max_seconds: float = 120.0,
    between_rounds: Callable[[], Awaitable[object]] | None = None,
) -> list[Figures]:
    """measure_in_turns with `clients` concurrent callers: each round runs every case in
    turn, `slice_calls` calls per client with all clients at once (`call(client, i)`), so
    the cases share the machine's drift. The case order rotates each round, so none is
    always first after `between_rounds` (untimed, e.g. resetting what the calls add up).
    Throughput is the calls over the wall time of the case's slices."""
    names = list(cases)
    samples: dict[str, list[float]] = {case: [] for case in names}
    wall: dict[str, float] = dict.fromkeys(names, 0.0)
    rounds = max(1, -(-calls // (clients * slice_calls)))

    async def client_slice(case: str, client: int, first: int, timed: bool) -> None:
        for i in range(first, first + slice_calls):
            t0 = time.perf_counter()
            await cases[case](client, i)
            if timed:
                samples[case].append(time.perf_counter() - t0)

    started = time.perf_counter()
    for round_ in range(-warmup_rounds, rounds):
        if between_rounds:
            await between_rounds()
        shift = round_ % len(names)
        for case in names[shift:] + names[:shift]:
            first = (round_ + warmup_rounds) * slice_calls
            t0 = time.perf_counter()
            await asyncio.gather(
                *(client_slice(case, c, first, round_ >= 0) for c in range(clients))
            )
            if round_ >= 0:
                wall[case] += time.perf_counter() - t0
        if round_ >= 0 and time.perf_counter() - started > max_seconds:
            break
    return [figures_of(case, samples[case], wall[case]) for case in names]


def figures_of(case: str, samples: list[float], wall_seconds: float | None = None) -> Figures:
    """Percentiles of the samples; throughput over `wall_seconds` (default: their sum, for
    calls made one after another)."""
    samples = sorted(samples)

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))] * 1000

    elapsed = wall_seconds if wall_seconds is not None else sum(samples)
    return Figures(case, len(samples), pct(0.50), pct(0.95), pct(0.99), len(samples) / elapsed)


def machine() -> dict[str, str]:
    def version(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except OSError:
            return "?"

    return {
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "postgres": version(["postgres", "--version"]),
        "redis": version(["redis-server", "--version"]).split(" sha")[0],
    }


def report(
    name: str,
    rows: list[tuple[Figures, Figures | None, str]],
    context: dict[str, object],
    notes: list[str] | None = None,
    extra: dict[str, object] | None = None,
) -> None:
    """Prints one table (case, figures, baseline, ratios) and writes it as JSON; `notes`
    are findings that are no row (printed after the rows' own notes); `extra` goes into
    the JSON only (e.g. a table the benchmark printed in its own form)."""
    print(f"\n{name}  " + "  ".join(f"{k}={v}" for k, v in {**machine(), **context}.items()))
    header = (
        f"{'case':<44}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'/s':>8}"
        f"   {'baseline p50/p95':>18}{'ratio p50':>11}{'ratio p95':>11}"
    )
    print(header)
    print("-" * len(header))
    for figures, baseline, _ in rows:
        f = figures
        line = f"{f.case:<44}{f.p50_ms:>9.2f}{f.p95_ms:>9.2f}{f.p99_ms:>9.2f}{f.per_second:>8.0f}"
        if baseline is not None:
            ratio50 = figures.p50_ms / baseline.p50_ms
            ratio95 = figures.p95_ms / baseline.p95_ms
            line += (
                f"   {baseline.p50_ms:>8.2f}/{baseline.p95_ms:<9.2f}"
                f"{ratio50:>10.3f}x{ratio95:>10.3f}x"
            )
        print(line)
    all_notes = [note for _, _, note in rows if note] + (notes or [])
    for note in all_notes:
        print(f"  note: {note}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "context": context,
                "notes": notes or [],
                **(extra or {}),
                "rows": [
                    {"figures": asdict(f), "baseline": asdict(b) if b else None, "note": n}
                    for f, b, n in rows
                ],
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nwritten: {out}")
