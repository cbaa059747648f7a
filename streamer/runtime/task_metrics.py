"""A task's metrics: the counters its loops bump, and the snapshot sent as ``task_metrics``.

``records_processed`` counts the data records the chain took in (from Kafka or its
input channels) and ``records_emitted`` those it sent to its consumers. The data
plane's counters also count the control records lossless recovery sends beside the
data (determinants): per output partition ``records_out``, ``bytes_out``, ``queued``
buffers, and per subpartition ``dropped``, ``lost``, ``replayed`` (records) and,
for lossless recovery, ``replayed_bytes``, ``replayed_disk_bytes`` (read back from
the spill file) and ``overflows`` (of retention); per input channel
``records_in``, ``bytes_in``, ``queued`` items, ``cleared``. Then the source's
metrics (with its consumer ``lag`` per partition) and the sink's, the operators'
(any dataclass ``metrics``), the task's counters, its watermark (ms), its keyed
``state`` size (RocksDB's estimates: ``keys``, ``bytes``) and its ``backpressure``:
``seconds`` spent waiting for room in its outputs since it started, and ``ratio``,
the share of wall time it waited since the previous ``collect`` (Flink's
back-pressured time per second). ``lost`` is what the netlayer counts as lost for a
failed consumer (``records_lost``; 0 where a subpartition does not count it).

Threading: the task's loop only (counters are plain ints).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from netlayer.gate import InputGate
from netlayer.partition import ResultPartition
from streamer.connectors import KafkaSink
from streamer.runtime.diagnostics import ErrorRecorder, diagnostics
from streamer.runtime.operators import ChainedOperator


@dataclass
class Counters:
    records_processed: int = 0
    unavailable_events: int = 0


@dataclass
class MetricSources:
    """What a task's metrics are read from; filled in as the task opens its parts."""

    counters: Counters
    partitions: Mapping[str, ResultPartition]
    gate: InputGate | None = None
    source: Callable[[], dict[str, Any]] | None = None
    sink: KafkaSink | None = None
    operators: Sequence[ChainedOperator] = ()
    watermark: Callable[[], int | None] | None = None
    deduplicated: Callable[[], list[int]] | None = None  # lossless: per channel
    blocked: Callable[[], float] | None = None  # seconds waiting for room in the outputs
    state: Callable[[], tuple[int, int]] | None = None  # keyed state: (keys, bytes)
    emitted: Callable[[], int] | None = None  # data records the chain sent to its consumers
    recorder: ErrorRecorder = field(default_factory=ErrorRecorder.install, repr=False)
    last_blocked: tuple[float, float] | None = field(default=None, repr=False)
    """(monotonic time, blocked seconds) at the previous ``collect``: for the ratio."""


def backpressure(m: MetricSources) -> dict[str, float]:
    """Seconds blocked on the outputs in all, and the share of time since the last call."""
    total = 0.0 if m.blocked is None else m.blocked()
    now = time.monotonic()
    ratio = 0.0
    if m.last_blocked is not None:
        then, before = m.last_blocked
        if now > then:
            ratio = min(1.0, max(0.0, (total - before) / (now - then)))
    m.last_blocked = (now, total)
    return {"seconds": round(total, 4), "ratio": round(ratio, 4)}


def collect(m: MetricSources) -> dict[str, Any]:
    out: dict[str, Any] = {
        "records_processed": m.counters.records_processed,
        "unavailable_events": m.counters.unavailable_events,
        "pid": os.getpid(),
        "time": time.time(),
        "backpressure": backpressure(m),
    }
    out.update(diagnostics(m.recorder))  # log_file, host, recent_errors, kafka
    if m.emitted is not None:
        out["records_emitted"] = m.emitted()
    if m.partitions:
        out["partitions"] = {
            pid: {
                "records_out": sum(sp.metrics.records_out for sp in p.subpartitions),
                "bytes_out": sum(sp.metrics.bytes_out for sp in p.subpartitions),
                "buffers_out": sum(sp.metrics.buffers_out for sp in p.subpartitions),
                "queued": sum(len(sp.queue) for sp in p.subpartitions),
                "dropped": [sp.metrics.records_dropped for sp in p.subpartitions],
                "lost": [sp.metrics.records_lost for sp in p.subpartitions],
                "replayed": [sp.metrics.records_replayed for sp in p.subpartitions],
                "replayed_bytes": [sp.metrics.bytes_replayed for sp in p.subpartitions],
                "replayed_disk_bytes": [
                    sp.metrics.bytes_replayed_from_disk for sp in p.subpartitions
                ],
                "overflows": [sp.metrics.retention_overflows for sp in p.subpartitions],
            }
            for pid, p in m.partitions.items()
        }
    if m.gate is not None:
        out["channels"] = [
            {
                "records_in": ch.metrics.records_in,
                "bytes_in": ch.metrics.bytes_in,
                "queued": len(ch.queue),
                "cleared": ch.metrics.records_cleared,
            }
            for ch in m.gate.channels
        ]
        if m.deduplicated is not None:
            for entry, n in zip(out["channels"], m.deduplicated(), strict=True):
                entry["deduplicated"] = n
    if m.source is not None:
        out["source"] = m.source()
    if m.sink is not None:
        out["sink"] = asdict(m.sink.metrics)
    operators = {
        op.spec.uid: asdict(op.metrics)
        for op in m.operators
        if hasattr(op, "metrics") and hasattr(op.metrics, "__dataclass_fields__")
    }
    if operators:
        out["operators"] = operators
    watermark = None if m.watermark is None else m.watermark()
    if watermark is not None:
        out["watermark"] = watermark
    if m.state is not None:
        keys, size = m.state()
        out["state"] = {"keys": keys, "bytes": size}
    return out


class PhaseClock:
    """Milliseconds spent per named phase, lap by lap (``str``: ``a 3 ms, b 40 ms``)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = (now - self._last) * 1000.0
        self._last = now

    def __str__(self) -> str:
        total = sum(self.laps.values())
        parts = ", ".join(f"{k} {v:.0f} ms" for k, v in self.laps.items())
        return f"{total:.0f} ms ({parts})"
