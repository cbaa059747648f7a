"""``ChannelDirectory``: the data addresses of a job's tasks, and the input channel
lists of their task plans.

A task's plan lists, per input gate, the address and attempt of the producer of
each channel. For an all-to-all gate that list is the source vertex's list (one
entry per subtask, in subtask order), so it is built once per change of that
vertex's addresses and shared by every consumer; a forward gate has one channel.
A plan therefore costs O(gates) once the lists are built, not O(channels): a
region or full restart of an all-to-all job builds each vertex's list once.

A task whose producers are not all addressed yet waits on *keys* (a vertex for
an all-to-all gate, a task for a forward gate); ``address_changed`` returns the
waiting tasks whose last key it completed, for the caller to answer.

Threading: the coordinator's loop only. The ``ExecutionStore`` owns it and calls
``address_changed`` after every change of a task's data address, so the address and
the directory's counts never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from streamer.graph import ExchangeType, ExecutionGraph, InputGate, TaskId


class TaskExecution(Protocol):
    """What the directory reads of a task's execution (``execution.TaskExecution``)."""

    @property
    def task(self) -> TaskId: ...

    @property
    def attempt(self) -> int: ...

    @property
    def data_address(self) -> str | None: ...


Channels = list[dict[str, Any]]
_Key = str | TaskId  # a vertex id (all-to-all gates) or a producer task (forward gates)


class ChannelDirectory:
    """See the module docstring."""

    def __init__(self, eg: ExecutionGraph, tasks: Mapping[TaskId, TaskExecution]) -> None:
        self.eg = eg
        self.tasks = tasks
        vertices = dict.fromkeys(t.vertex_id for t in eg.tasks)
        self._subtasks = {v: [tasks[t] for t in eg.tasks_of(v)] for v in vertices}
        self._addressed = dict.fromkeys(vertices, 0)  # subtasks with an address
        self._lists: dict[str, Channels] = {}  # complete vertices only
        self._waiters: dict[_Key, set[TaskId]] = {}
        self._waiting_on: dict[TaskId, set[_Key]] = {}

    def address_changed(self, te: TaskExecution, old: str | None) -> list[TaskId]:
        """``te.data_address`` changed from ``old`` (None: no address); returns the
        waiting tasks that this completed (their plans may be ready)."""
        vertex = te.task.vertex_id
        self._addressed[vertex] += (te.data_address is not None) - (old is not None)
        self._lists.pop(vertex, None)
        if te.data_address is None:
            return []
        keys: list[_Key] = [te.task]
        if self._addressed[vertex] == len(self._subtasks[vertex]):
            keys.append(vertex)
        ready = []
        for key in keys:
            for waiter in self._waiters.pop(key, ()):
                waiting = self._waiting_on.get(waiter)
                if waiting is not None:
                    waiting.discard(key)
                    if not waiting:
                        del self._waiting_on[waiter]
                        ready.append(waiter)
        return ready

    def inputs(self, task: TaskId) -> list[Channels] | None:
        """The plan's channel lists of ``task``, one per input gate; None while a
        producer has no address (``task`` then waits for it, see ``address_changed``)."""
        inputs: list[Channels] = []
        missing: set[_Key] = set()
        for gate in self.eg.input_gates(task):
            if gate.exchange == ExchangeType.KAFKA:
                inputs.append([])  # read from its topic: waits for no producer
                continue
            channels, key = self._gate(gate)
            if channels is None:
                missing.add(key)
            else:
                inputs.append(channels)
        if missing:
            self._waiting_on[task] = missing
            for key in missing:
                self._waiters.setdefault(key, set()).add(task)
            return None
        self._waiting_on.pop(task, None)
        return inputs

    def forget(self, task: TaskId) -> None:
        """``task`` no longer waits for a plan (it failed or is being restarted)."""
        self._waiting_on.pop(task, None)

    def _gate(self, gate: InputGate) -> tuple[Channels | None, _Key]:
        if gate.edge.is_all_to_all:
            vertex = gate.edge.source_vertex
            channels = self._lists.get(vertex)
            if channels is None and self._addressed[vertex] == len(self._subtasks[vertex]):
                channels = self._lists[vertex] = [
                    {"address": te.data_address, "attempt": te.attempt}
                    for te in self._subtasks[vertex]
                ]
            return channels, vertex
        te = self.tasks[gate.channels[0]]
        if te.data_address is None:
            return None, te.task
        return [{"address": te.data_address, "attempt": te.attempt}], te.task
