"""Build a task's operator chain: operators from their specs, keyed state, restore.

``build_chain`` wires the operators of a vertex (between its source head and sink
tail) to the chain's output; ``build_task_chain`` also opens the task's RocksDB
keyed state (restored from a checkpoint when the plan says so), attaches a join's
late side output and restores each operator's JSON state.

Imports: this module sits above ``operators``, ``join`` and ``join_factory``
(``join`` builds on ``operators``), so none of them imports another in a cycle.

Threading: the task's loop only (called once, before the first record).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.api import Job
from streamer.graph import JobEdge, JobVertex, OperatorKind, OperatorSpec, key_group_range
from streamer.rpc.kinds import STATE_PLAN_KEYS
from streamer.runtime.join_factory import RuntimeIntervalJoin, build_join, configure_join
from streamer.runtime.operators import (
    ChainedOperator,
    ChainOutput,
    FilterOperator,
    FlatMapOperator,
    KeyedProcessOperator,
    MapOperator,
    Output,
    TaskInfo,
)
from streamer.runtime.task_context import TaskContext
from streamer.state import KeyedStateBackend

log = logging.getLogger(__name__)

Head = Callable[[Any, int | None, int], None]
"""``head(value, ts, input_index)``: feeds one record into the chain."""


def build_operator(
    job: Job, spec: OperatorSpec, input_edges: tuple[JobEdge, ...], backend: Any = None
) -> ChainedOperator:
    """The runtime operator for one ``OperatorSpec`` (not sources or sinks)."""
    fn = job.operator_function(spec)
    if spec.kind == OperatorKind.MAP:
        assert fn is not None
        return MapOperator(spec, fn)
    if spec.kind == OperatorKind.FILTER:
        assert fn is not None
        return FilterOperator(spec, fn)
    if spec.kind == OperatorKind.FLAT_MAP:
        assert fn is not None
        return FlatMapOperator(spec, fn)
    if spec.kind == OperatorKind.PROCESS:
        assert fn is not None
        edges = sorted(input_edges, key=lambda e: e.input_index)
        key_fns = [job.key_function(e) or _no_key for e in edges]
        return KeyedProcessOperator(spec, fn, key_fns, backend)
    if spec.kind == OperatorKind.JOIN:
        return build_join(job, spec, input_edges, backend)
    raise NotImplementedError(f"operator kind {spec.kind!s} ({spec.name}) has no runtime yet")


def _no_key(value: Any) -> Any:
    return None


def build_chain(
    job: Job, vertex: JobVertex, tail_output: Output, info: TaskInfo, backend: Any = None
) -> tuple[list[ChainedOperator], Output]:
    """Operators of ``vertex`` between its source head and sink tail, wired to ``tail_output``.

    Returns the operators (head first) and the ``Output`` that feeds the chain's
    first operator (``tail_output`` itself when the chain has no operator).
    """
    body = [
        op
        for op in vertex.operators
        if op.kind not in (OperatorKind.KAFKA_SOURCE, OperatorKind.KAFKA_SINK)
    ]
    input_edges = job.job_graph.inputs_of(vertex.vertex_id)
    operators = [
        build_operator(job, op, input_edges if i == 0 else (), backend) for i, op in enumerate(body)
    ]
    out: Output = tail_output
    for op in reversed(operators):
        op.output = out
        out = ChainOutput(op)
    for op in operators:
        op.open(info)
    return operators, out


@dataclass
class TaskChain:
    operators: list[ChainedOperator]
    head: Head
    backend: KeyedStateBackend | None


def build_task_chain(
    ctx: TaskContext,
    tail: Output,
    restore: dict[str, Any],
    backend: KeyedStateBackend | None = None,
) -> TaskChain:
    """The task's chain wired to ``tail``, its keyed state open and everything restored.

    ``backend``: the keyed state, already opened for ``restore`` (`EarlyState`);
    otherwise it is opened here when the chain needs one."""
    if backend is None and needs_keyed_state(ctx.vertex):
        backend = open_state_backend(ctx, restore)
    operators, first = build_chain(ctx.job, ctx.vertex, tail, ctx.info, backend)
    for op in operators:
        if isinstance(op, RuntimeIntervalJoin):
            configure_join(op, ctx.config)
        saved = restore.get("operators", {}).get(op.spec.uid)
        if saved is not None or restore.get("keyed"):
            op.restore_state(saved)  # None: rebuild in-memory indexes from the state
    if operators:
        return TaskChain(operators, operators[0].process, backend)
    return TaskChain(operators, first.collect, backend)  # no operator: the tail is the head


def needs_keyed_state(vertex: JobVertex) -> bool:
    return any(op.kind in (OperatorKind.PROCESS, OperatorKind.JOIN) for op in vertex.operators)


class EarlyState:
    """The keyed state opened from the deployment's ``restore_hint`` while the task
    waits for its plan; `take` hands it over if the plan restores the same state.

    Ownership: the backend is this object's until `take` returns it (then the
    caller's); one it does not hand over, it closes."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.hint: dict[str, Any] = dict(ctx.deployment.get("restore_hint") or {})
        self.backend: KeyedStateBackend | None = None

    def open(self) -> None:
        """Open it (blocking); a failure is left for the plan's own restore to raise."""
        if not needs_keyed_state(self.ctx.vertex):
            return
        try:
            self.backend = open_state_backend(self.ctx, self.hint)
        except Exception as exc:  # noqa: BLE001 - the restore from the plan reports it
            log.info("task %s: early state restore failed (%s); restoring later", self.ctx, exc)

    def take(self, restore: dict[str, Any]) -> KeyedStateBackend | None:
        """The backend if ``restore`` (the plan) restores the state it was opened
        for; otherwise it is closed and None returned (open the plan's instead)."""
        backend, self.backend = self.backend, None
        if backend is None:
            return None
        if all(restore.get(key) == self.hint.get(key) for key in STATE_PLAN_KEYS):
            return backend
        backend.close()
        return None

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


def open_state_backend(ctx: TaskContext, restore: dict[str, Any]) -> KeyedStateBackend:
    """RocksDB keyed state in this attempt's working directory, restored if asked."""
    base = Path(ctx.config.get("state_dir") or Path.cwd() / "streamer-state")
    path = base / ctx.job_id / f"{ctx.task.replace('#', '-')}-a{ctx.attempt}"
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    maxp = ctx.vertex.max_parallelism
    groups = key_group_range(ctx.task_id.subtask, maxp, ctx.vertex.parallelism)
    sources = [(Path(d), meta) for d, meta in restore.get("keyed", [])]
    if sources:
        return KeyedStateBackend.restore(
            path, sources, max_parallelism=maxp, key_groups=groups, within=restore.get("from")
        )
    return KeyedStateBackend.open(path, max_parallelism=maxp, key_groups=groups)
