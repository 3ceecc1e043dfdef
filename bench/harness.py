"""Shared benchmark plumbing: timing loops, percentiles, the report table and JSON."""

from __future__ import annotations

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
    return _figures(case, samples)


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
    return [_figures(case, times) for case, times in samples.items()]


def _figures(case: str, samples: list[float]) -> Figures:
    samples = sorted(samples)

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p * len(samples)))] * 1000

    return Figures(case, len(samples), pct(0.50), pct(0.95), pct(0.99), len(samples) / sum(samples))


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
    name: str, rows: list[tuple[Figures, Figures | None, str]], context: dict[str, object]
) -> None:
    """Prints one table (case, figures, baseline, ratio) and writes it as JSON."""
    print(f"\n{name}  " + "  ".join(f"{k}={v}" for k, v in {**machine(), **context}.items()))
    header = (
        f"{'case':<44}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'/s':>8}"
        f"   {'baseline p50/p95':>18}{'ratio p95':>11}"
    )
    print(header)
    print("-" * len(header))
    for figures, baseline, _ in rows:
        f = figures
        line = f"{f.case:<44}{f.p50_ms:>9.2f}{f.p95_ms:>9.2f}{f.p99_ms:>9.2f}{f.per_second:>8.0f}"
        if baseline is not None:
            ratio = figures.p95_ms / baseline.p95_ms
            line += f"   {baseline.p50_ms:>8.2f}/{baseline.p95_ms:<9.2f}{ratio:>10.3f}x"
        print(line)
    notes = [note for _, _, note in rows if note]
    for note in notes:
        print(f"  note: {note}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "machine": machine(),
                "context": context,
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
