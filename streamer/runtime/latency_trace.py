"""Stage times of sampled records, for a latency breakdown (off unless asked for).

With ``STREAMER_LATENCY_TRACE=<dir>`` in a task's environment (a worker passes
its own on), the task's loops mark each batch: the source after a poll returned
(``<vertex>.polled``; with it ``<vertex>.appended``, the record's own Kafka
timestamp: the broker's append time on a ``LogAppendTime`` topic) and after the
batch went through its chain (``<vertex>.emitted``); a task with network inputs
when it took a batch from its input gate (``<vertex>.in``) and after its chain
processed it (``<vertex>.out``; for a sink task, after every ``produce`` call of
the batch returned). A record is
sampled when its ``STREAMER_LATENCY_TRACE_FIELD`` field (default ``seq``) is an int
divisible by ``STREAMER_LATENCY_TRACE_EVERY`` (default 50): the same records at
every stage and task (where an operator copies the field into its output, as the
keyed count does with ``seq``), so each stage's time is exact per record. Each
mark is a row ``[stage, id, time.time()]`` (one clock read per batch), written as
JSON lines to ``<dir>/<task>-<pid>.jsonl`` about twice a second.
``streamer.bench.breakdown`` joins the rows with the times the benchmark's feeder
produced each id (one host: one clock).

Cost: off, the loops check one attribute per batch (``trace is not None``); on,
a field lookup and a modulo per record per stage, and a file write per half second.

Threading: the task's loop only (the source's poll thread never marks).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from streamer.runtime.task_context import TaskContext

ENV_VAR = "STREAMER_LATENCY_TRACE"
FIELD_ENV_VAR = "STREAMER_LATENCY_TRACE_FIELD"
EVERY_ENV_VAR = "STREAMER_LATENCY_TRACE_EVERY"
FLUSH_S = 0.5


class LatencyTrace:
    """One task's trace rows, buffered and appended to its file."""

    __slots__ = ("_due", "_rows", "every", "field", "path", "vertex")

    def __init__(self, path: Path, vertex: str, field: str, every: int) -> None:
        self.path = path
        self.vertex = vertex
        self.field = field
        self.every = max(1, every)
        self._rows: list[tuple[str, int, float]] = []
        self._due = time.monotonic() + FLUSH_S

    @classmethod
    def for_task(cls, ctx: TaskContext) -> LatencyTrace | None:
        """The task's trace when ``STREAMER_LATENCY_TRACE`` is set, else None."""
        where = os.environ.get(ENV_VAR)
        if not where:
            return None
        base = Path(where)
        base.mkdir(parents=True, exist_ok=True)
        name = f"{ctx.task.replace('#', '-')}-{os.getpid()}.jsonl"
        field = os.environ.get(FIELD_ENV_VAR) or "seq"
        every = int(os.environ.get(EVERY_ENV_VAR) or 50)
        return cls(base / name, ctx.task_id.vertex_id, field, every)

    def source_batch(self, stage: str, batch: list[Any]) -> None:
        """A source's batch (``SourceRecord``s) reached ``<vertex>.<stage>``; at
        ``polled`` each sampled record's Kafka timestamp is marked as ``appended``."""
        self._mark(stage, [rec.value for rec in batch])
        if stage == "polled":
            name = f"{self.vertex}.appended"
            field, every, rows = self.field, self.every, self._rows
            for rec in batch:
                value = rec.value
                if value.__class__ is dict and rec.timestamp is not None:
                    rid = value.get(field)
                    if rid.__class__ is int and rid % every == 0:
                        rows.append((name, rid, rec.timestamp / 1000.0))

    def channel_batch(self, stage: str, items: list[Any]) -> None:
        """An input gate's batch (``[ts, value]`` records and events) reached ``stage``."""
        self._mark(stage, [item[1] for item in items if item.__class__ is list])

    def _mark(self, stage: str, values: list[Any]) -> None:
        now = time.time()
        name = f"{self.vertex}.{stage}"
        field, every, rows = self.field, self.every, self._rows
        for value in values:
            if value.__class__ is dict:
                rid = value.get(field)
                if rid.__class__ is int and rid % every == 0:
                    rows.append((name, rid, now))
        if time.monotonic() >= self._due:
            self.flush()

    def flush(self) -> None:
        self._due = time.monotonic() + FLUSH_S
        if not self._rows:
            return
        data = b"".join(orjson.dumps(row) + b"\n" for row in self._rows)
        self._rows.clear()
        with open(self.path, "ab") as f:
            f.write(data)
