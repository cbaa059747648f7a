"""Where a keyed-count record's latency goes, from the tasks' latency traces.

Input: the rows the tasks wrote (``streamer.runtime.latency_trace``: stage, record
``seq``, wall time, records in the batch), the feeder's produce time of every
``seq`` and the latency reader's receive time and Kafka timestamp of every result
(``streamer.bench.loadgen``). One host, one clock.

Every trace row gives the *age* of a sampled record at a stage boundary (time -
its produce time), weighted by its batch's size. The boundaries, in the order a
record passes them::

    produced -> events.polled -> events.emitted -> count.in -> count.out
             -> sink.in -> sink.out -> (Kafka timestamp) -> received

Each boundary's age is an exact distribution (p50/p99 over samples). A stage's
median is the difference of its two boundaries' median ages (different records are
sampled at each task, so a stage's p99 is not a difference); where both boundaries
are in one task (``polled -> emitted``, ``in -> out``), the same record is marked
at both, and the stage's own p50/p99 are exact too (``in_task``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from streamer.bench.loadgen import load_array

SOURCE, OPERATOR, SINK = "events", "count", "sink"  # examples.keyed_count's vertices
STAGES: list[tuple[str, str, str, str]] = [
    # name, from boundary, to boundary, what it holds
    ("source poll", "produced", f"{SOURCE}.polled",
     "feeder linger, broker append, fetch, librdkafka queue, poll thread hand-off"),
    ("source chain", f"{SOURCE}.polled", f"{SOURCE}.emitted",
     "timestamps, watermarks, key, serialize into netlayer buffers (whole batch)"),
    ("netlayer to count", f"{SOURCE}.emitted", f"{OPERATOR}.in",
     "buffer timeout, credit wait, TCP, input gate queue, the count loop busy"),
    ("operator + state", f"{OPERATOR}.in", f"{OPERATOR}.out",
     "deserialize, count function, RocksDB get/put, emit (whole batch)"),
    ("netlayer to sink", f"{OPERATOR}.out", f"{SINK}.in",
     "buffer timeout, credit wait, TCP, input gate queue, the sink loop busy"),
    ("sink produce", f"{SINK}.in", f"{SINK}.out",
     "serialize and produce() every record of the batch"),
    ("delivery + commit", f"{SINK}.out", "received",
     "producer linger, broker, the reader's fetch; exactly-once: the commit"),
]  # fmt: skip
BOUNDARIES = ["produced", *(s[2] for s in STAGES)]


def weighted_percentile(samples: Sequence[tuple[float, int]], q: float) -> float | None:
    """The ``q`` quantile of ``(value, weight)`` samples (nearest rank by weight)."""
    if not samples:
        return None
    ordered = sorted(samples)
    total = sum(w for _, w in ordered)
    goal = q * total
    seen = 0
    for value, weight in ordered:
        seen += weight
        if seen >= goal:
            return value
    return ordered[-1][0]


def read_traces(trace_dir: Path) -> list[tuple[str, str, int, float, int]]:
    """``(file, stage, id, time, n)`` of every row of every task's trace file."""
    rows = []
    for path in sorted(trace_dir.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                stage, rid, t, n = orjson.loads(line)
            except (ValueError, TypeError):
                continue  # a line cut short by a task's end
            if isinstance(rid, int):
                rows.append((path.name, str(stage), rid, float(t), int(n)))
    return rows


def breakdown(
    rows: Iterable[tuple[str, str, int, float, int]],
    produced: Sequence[float],
    received: Iterable[tuple[int, float, float]],
    first: int = 0,
) -> dict[str, Any]:
    """Boundary ages and stage times (ms). ``received``: ``(seq, receive time, Kafka
    timestamp)``; ``first``: seqs below it (the warm-up) are left out."""
    ages: dict[str, list[tuple[float, int]]] = {b: [] for b in [*BOUNDARIES, "kafka"]}
    marks: dict[tuple[str, int], dict[str, float]] = {}
    for file, stage, rid, t, n in rows:
        if first <= rid < len(produced) and stage in ages:
            ages[stage].append(((t - produced[rid]) * 1000, max(1, n)))
            marks.setdefault((file, rid), {})[stage] = t
    for seq, recv, kts in received:
        if first <= seq < len(produced):
            ages["received"].append(((recv - produced[seq]) * 1000, 1))
            ages["kafka"].append(((kts - produced[seq]) * 1000, 1))
    ages["produced"] = [(0.0, 1)]

    def summary(samples: list[tuple[float, int]]) -> dict[str, Any]:
        return {
            "p50_ms": weighted_percentile(samples, 0.5),
            "p99_ms": weighted_percentile(samples, 0.99),
            "samples": len(samples),
        }

    out_ages = {b: summary(s) for b, s in ages.items()}
    stages = []
    for name, a, b, holds in STAGES:
        pa, pb = out_ages[a]["p50_ms"], out_ages[b]["p50_ms"]
        entry: dict[str, Any] = {
            "stage": name,
            "from": a,
            "to": b,
            "holds": holds,
            "p50_ms": None if pa is None or pb is None else pb - pa,
        }
        if a.split(".")[0] == b.split(".")[0] and "." in a:  # both marks in one task
            pairs = [
                ((m[b] - m[a]) * 1000, 1) for m in marks.values() if a in m and b in m
            ]  # fmt: skip
            entry["in_task"] = summary(pairs)
        stages.append(entry)
    return {"ages": out_ages, "stages": stages}


def from_run(trace_dir: Path, work: Path, count: int, warmup: float) -> dict[str, Any]:
    """The breakdown of one latency run (its trace dir, the feeder's and reader's files)."""
    produced = load_array(work / "times", "d")
    seqs = load_array(work / "out.seq", "q")
    recv, kts = load_array(work / "out.recv", "d"), load_array(work / "out.kts", "d")
    return breakdown(
        read_traces(trace_dir), produced, zip(seqs, recv, kts, strict=True), int(count * warmup)
    )


def format_table(result: dict[str, Any]) -> list[str]:
    """Lines: each stage's median (and in-task p99), then each boundary's age."""

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}"

    lines = [f"  {'stage':<20}{'p50 ms':>9}{'in-task p50/p99 ms':>21}  holds"]
    for s in result["stages"]:
        own = s.get("in_task")
        exact = f"{ms(own['p50_ms'])} / {ms(own['p99_ms'])}" if own else ""
        lines.append(f"  {s['stage']:<20}{ms(s['p50_ms']):>9}{exact:>21}  {s['holds']}")
    lines.append(f"  {'age at':<20}{'p50 ms':>9}{'p99 ms':>10}{'samples':>9}")
    for b, a in result["ages"].items():
        if b != "produced":
            lines.append(f"  {b:<20}{ms(a['p50_ms']):>9}{ms(a['p99_ms']):>10}{a['samples']:>9}")
    return lines
