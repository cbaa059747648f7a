"""Sampled stage times of records, for a latency breakdown (off unless asked for).

With ``STREAMER_LATENCY_TRACE=<dir>`` in a task's environment (a worker passes
its own on), the task's loops call ``mark(stage, value, n)`` once per batch: the
source after a poll returned (``<vertex>.polled``) and after the batch went through
its chain (``<vertex>.emitted``); a task with network inputs when it took a batch
from its input gate (``<vertex>.in``) and after its chain processed it
(``<vertex>.out``; for a sink task, after every ``produce`` call of the batch
returned). ``value`` is one record of the batch (the middle one), identified by its
``STREAMER_LATENCY_TRACE_FIELD`` field (default ``seq``); records without that field
are not traced. Each mark is a row ``[stage, id, time.time(), n]`` (``n``: records in
the batch), written as JSON lines to ``<dir>/<task>-<pid>.jsonl`` about twice a
second. ``streamer.bench.breakdown`` joins the rows with the times the benchmark's
feeder produced each id (one host: one clock).

Cost: off, the loops check one attribute per batch (``trace is not None``); on,
one dict lookup, one clock read and one tuple per batch, and a file write per
half second. The stages are cumulative ages, sampled one record per batch.

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
FLUSH_S = 0.5


class LatencyTrace:
    """One task's trace rows, buffered and appended to its file."""

    __slots__ = ("_due", "_rows", "field", "path", "vertex")

    def __init__(self, path: Path, vertex: str, field: str) -> None:
        self.path = path
        self.vertex = vertex
        self.field = field
        self._rows: list[tuple[str, Any, float, int]] = []
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
        return cls(base / name, ctx.task_id.vertex_id, field)

    def mark(self, stage: str, value: Any, n: int) -> None:
        """``value`` (a record of the batch) reached ``<vertex>.<stage>`` with ``n`` records."""
        if value.__class__ is not dict:
            return
        rid = value.get(self.field)
        if rid is None:
            return
        self._rows.append((f"{self.vertex}.{stage}", rid, time.time(), n))
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
