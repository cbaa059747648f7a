"""``ExecutionStore``: the sole owner of each task's current attempt, placement,
address and state (Flink's ``Execution`` vertices, small).

Everyone else reads ``TaskExecution`` values through the store and changes them
only through its methods, so the attempt, the state and the data address cannot
disagree: a new attempt clears the old one's connection, pid and address in one
step, and state changes follow ``TRANSITIONS`` (an illegal one raises
``IllegalTaskTransition``; it is a bug in the coordinator, never a peer's fault,
because reports of stale attempts are filtered before they get here).

The store also keeps the ``ChannelDirectory`` (which producer addresses each
task's plan needs) in step with the addresses.

Threading: the coordinator's loop only; not thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from streamer.coordinator.directory import ChannelDirectory
from streamer.graph import ExecutionGraph, TaskId
from streamer.rpc import RpcConnection, TaskState

S = TaskState
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    S.CREATED: frozenset({S.DEPLOYING, S.FAILED, S.CANCELING, S.CANCELED}),
    S.DEPLOYING: frozenset({S.RUNNING, S.FINISHED, S.FAILED, S.CANCELING, S.CANCELED}),
    S.RUNNING: frozenset({S.FINISHED, S.FAILED, S.CANCELING, S.CANCELED}),
    S.CANCELING: frozenset({S.CANCELED, S.FAILED}),
    # a final attempt may still be canceled as part of a restart of its region
    S.FINISHED: frozenset({S.CANCELING}),
    S.CANCELED: frozenset({S.CANCELING}),
    S.FAILED: frozenset({S.CANCELING, S.CANCELED}),
}


class IllegalTaskTransition(RuntimeError):
    """The coordinator tried a state change ``TRANSITIONS`` does not allow."""


@dataclass
class TaskExecution:
    """The coordinator's view of one task's current attempt (read-only outside the store)."""

    task: TaskId
    attempt: int = 0
    state: TaskState = TaskState.CREATED
    worker_id: str | None = None
    pid: int | None = None
    data_address: str | None = None
    conn: RpcConnection | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_attempt: int = -1  # the attempt that sent ``metrics``; its counters start at 0
    error: str | None = None
    traceback: str | None = None
    state_since: float = field(default_factory=time.time)


class ExecutionStore:
    """Every task's ``TaskExecution``; see the module docstring."""

    def __init__(self, eg: ExecutionGraph) -> None:
        self._tasks = {t: TaskExecution(t) for t in eg.tasks}
        self.directory = ChannelDirectory(eg, self._tasks)

    # ---------------------------------------------------------------- reading
    def __getitem__(self, task: TaskId) -> TaskExecution:
        return self._tasks[task]

    def get(self, task: TaskId) -> TaskExecution | None:
        return self._tasks.get(task)

    def __iter__(self) -> Iterator[TaskId]:
        return iter(self._tasks)

    def __len__(self) -> int:
        return len(self._tasks)

    def items(self) -> Iterator[tuple[TaskId, TaskExecution]]:
        return iter(self._tasks.items())

    def values(self) -> Iterator[TaskExecution]:
        return iter(self._tasks.values())

    def current(self, task: TaskId, attempt: int) -> TaskExecution | None:
        """``task``'s execution if ``attempt`` is its current attempt, else None (stale)."""
        te = self._tasks.get(task)
        return te if te is not None and te.attempt == attempt else None

    def all_in(self, *states: TaskState) -> bool:
        return all(te.state in states for te in self._tasks.values())

    # ---------------------------------------------------------------- writing
    def transition(self, task: TaskId, state: TaskState) -> None:
        te = self._tasks[task]
        if state == te.state:
            return
        if state not in TRANSITIONS[te.state]:
            raise IllegalTaskTransition(f"task {task}@{te.attempt}: {te.state} -> {state}")
        te.state = state
        te.state_since = time.time()

    def new_attempt(self, task: TaskId) -> int:
        """Start ``task``'s next attempt (CREATED, no process, connection or address)."""
        te = self._tasks[task]
        te.attempt += 1
        te.state = TaskState.CREATED
        te.state_since = time.time()
        te.pid = None
        te.conn = None
        self.directory.forget(task)
        self.set_address(task, None)
        return te.attempt

    def deploying(self, task: TaskId, worker_id: str) -> None:
        self.transition(task, TaskState.DEPLOYING)
        te = self._tasks[task]
        te.worker_id = worker_id
        te.pid = None
        te.conn = None
        self.set_address(task, None)

    def set_pid(self, task: TaskId, pid: int) -> None:
        self._tasks[task].pid = pid

    def said_hello(
        self, task: TaskId, conn: RpcConnection, pid: int, address: str | None
    ) -> list[TaskId]:
        """The attempt's process is up; returns tasks whose plans its address completed."""
        te = self._tasks[task]
        te.conn = conn
        te.pid = pid
        return self.set_address(task, address)

    def set_address(self, task: TaskId, address: str | None) -> list[TaskId]:
        """Set the attempt's data address; returns tasks whose plans it completed."""
        te = self._tasks[task]
        old, te.data_address = te.data_address, address
        return self.directory.address_changed(te, old)

    def failed(self, task: TaskId, error: str | None = None, tb: str | None = None) -> None:
        """The current attempt failed: it has no connection or address any more."""
        self.transition(task, TaskState.FAILED)
        te = self._tasks[task]
        te.conn = None
        if error is not None:
            te.error, te.traceback = error, tb
        self.directory.forget(task)
        self.set_address(task, None)

    def set_metrics(self, task: TaskId, metrics: dict[str, Any]) -> None:
        te = self._tasks[task]
        te.metrics = metrics
        te.metrics_attempt = te.attempt
