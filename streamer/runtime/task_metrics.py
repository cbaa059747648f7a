"""A task's metrics: the counters its loops bump, and the snapshot sent as ``task_metrics``.

``collect`` reads the data plane's counters (per subpartition: ``records_out``,
``dropped``, ``lost``; per input channel: ``records_in``, ``cleared``), the
source's and sink's, the operators' (any dataclass ``metrics``), the task's
counters and its watermark. ``lost`` is what the netlayer counts as lost for
a failed consumer (``records_lost``; 0 where a subpartition does not count it).

Threading: the task's loop only (counters are plain ints).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from netlayer.gate import InputGate
from netlayer.partition import ResultPartition
from streamer.connectors import KafkaSink
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


def collect(m: MetricSources) -> dict[str, Any]:
    out: dict[str, Any] = {
        "records_processed": m.counters.records_processed,
        "unavailable_events": m.counters.unavailable_events,
        "pid": os.getpid(),
        "time": time.time(),
    }
    if m.partitions:
        out["partitions"] = {
            pid: {
                "records_out": sum(sp.metrics.records_out for sp in p.subpartitions),
                "dropped": [sp.metrics.records_dropped for sp in p.subpartitions],
                "lost": [sp.metrics.records_lost for sp in p.subpartitions],
                "replayed": [sp.metrics.records_replayed for sp in p.subpartitions],
            }
            for pid, p in m.partitions.items()
        }
    if m.gate is not None:
        out["channels"] = [
            {"records_in": ch.metrics.records_in, "cleared": ch.metrics.records_cleared}
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
    return out
