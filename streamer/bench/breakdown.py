"""Where a keyed-count record's latency goes, from the tasks' latency traces.

Input: the rows the tasks wrote (``streamer.runtime.latency_trace``: stage, record
``seq``, wall time; every record whose ``seq`` is a multiple of the trace's
``every``), the feeder's produce time of every ``seq`` and the latency reader's
receive time and Kafka timestamp of every result (``streamer.bench.loadgen``).
One host, one clock. The boundaries a record passes, in order::

    produced -> events.appended -> events.polled -> events.emitted -> count.in
             -> count.out -> sink.in -> sink.out -> (Kafka timestamp) -> received

``events.appended`` is the source record's Kafka timestamp: the benchmark's input
topic is ``LogAppendTime``, so it is when the broker appended the event. That
splits what the feeder and the broker take (``broker ingress``) from what the job
takes; ``job`` is ``received - appended``.

The same records are marked at every boundary (the keyed count copies ``seq``
into its output), so a stage's p50/p99 are over exact per-record times (records
marked at both of its boundaries); ``ages`` give each boundary's time since
produce.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from streamer.bench.loadgen import load_array
from streamer.bench.timeline import percentile

SOURCE, OPERATOR, SINK = "events", "count", "sink"  # examples.keyed_count's vertices
STAGES: list[tuple[str, str, str, str]] = [
    # name, from boundary, to boundary, what it holds
    ("broker ingress", "produced", f"{SOURCE}.appended",
     "feeder linger, produce request queued at the broker, append (LogAppendTime)"),
    ("source fetch", f"{SOURCE}.appended", f"{SOURCE}.polled",
     "broker fetch, librdkafka queue, the source loop's poll"),
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
APPENDED = f"{SOURCE}.appended"


def read_traces(trace_dir: Path) -> list[tuple[str, int, float]]:
    """``(stage, id, time)`` of every row of every task's trace file."""
    rows = []
    for path in sorted(trace_dir.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                stage, rid, t = orjson.loads(line)
            except (ValueError, TypeError):
                continue  # a line cut short by a task's end
            if isinstance(rid, int):
                rows.append((str(stage), rid, float(t)))
    return rows


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": percentile(values, 0.5),
        "p99_ms": percentile(values, 0.99),
        "samples": len(values),
    }


def breakdown(
    rows: Iterable[tuple[str, int, float]],
    produced: Sequence[float],
    received: Iterable[tuple[int, float, float]],
    first: int = 0,
) -> dict[str, Any]:
    """Stage times and boundary ages (ms) per traced record. ``received``: ``(seq,
    receive time, Kafka timestamp)`` of every result; ``first``: seqs below it (the
    warm-up) are left out. A record marked twice at a boundary keeps the first."""
    marks: dict[int, dict[str, float]] = {}
    for stage, rid, t in rows:
        if first <= rid < len(produced):
            marks.setdefault(rid, {}).setdefault(stage, t)
    for seq, recv, kts in received:
        if seq in marks:
            marks[seq].setdefault("received", recv)
            marks[seq].setdefault("kafka", kts)
    for rid, m in marks.items():
        m["produced"] = produced[rid]
    ages = {
        b: _summary([(m[b] - m["produced"]) * 1000 for m in marks.values() if b in m])
        for b in [*BOUNDARIES[1:], "kafka"]
    }
    stages = []
    for name, a, b, holds in STAGES:
        times = [(m[b] - m[a]) * 1000 for m in marks.values() if a in m and b in m]
        stages.append({"stage": name, "from": a, "to": b, "holds": holds, **_summary(times)})
    job = [
        (m["received"] - m[APPENDED]) * 1000
        for m in marks.values()
        if APPENDED in m and "received" in m
    ]
    return {"traced": len(marks), "ages": ages, "stages": stages, "job": _summary(job)}


def from_run(trace_dir: Path, work: Path, count: int, warmup: float) -> dict[str, Any]:
    """The breakdown of one latency run (its trace dir, the feeder's and reader's files)."""
    produced = load_array(work / "times", "d")
    seqs = load_array(work / "out.seq", "q")
    recv, kts = load_array(work / "out.recv", "d"), load_array(work / "out.kts", "d")
    return breakdown(
        read_traces(trace_dir), produced, zip(seqs, recv, kts, strict=True), int(count * warmup)
    )


def format_table(result: dict[str, Any]) -> list[str]:
    """Lines: each stage's p50/p99, then each boundary's age."""

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.1f}"

    lines = [f"  {'stage':<20}{'p50 ms':>9}{'p99 ms':>10}{'records':>9}  holds"]
    for s in result["stages"]:
        lines.append(
            f"  {s['stage']:<20}{ms(s['p50_ms']):>9}{ms(s['p99_ms']):>10}{s['samples']:>9}"
            f"  {s['holds']}"
        )
    job = result.get("job")
    if job:
        lines.append(
            f"  {'job (append->recv)':<20}{ms(job['p50_ms']):>9}{ms(job['p99_ms']):>10}"
            f"{job['samples']:>9}  everything after the broker appended the event"
        )
    lines.append(f"  {'age at':<20}{'p50 ms':>9}{'p99 ms':>10}")
    for b, a in result["ages"].items():
        lines.append(f"  {b:<20}{ms(a['p50_ms']):>9}{ms(a['p99_ms']):>10}")
    return lines
