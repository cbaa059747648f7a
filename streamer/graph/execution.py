"""The physical graph: every vertex expanded into subtasks, and their channels.

For each `JobEdge` and each consumer subtask there is an `InputGate` (one per
input edge, indexed by ``input_index``) whose channels list the producer
subtasks in channel order; for each producer subtask there is a
`ResultPartition` (one per output edge) whose subpartitions list the consumer
subtasks in subpartition order:

- ``forward``: producer ``i`` feeds consumer ``i`` only; its partition has a
  single subpartition (index 0) and the consumer's gate a single channel;
- ``hash`` / ``rebalance`` / ``broadcast``: all-to-all; producer ``i`` has one
  subpartition per consumer subtask (subpartition ``j`` -> consumer ``j``) and
  consumer ``j`` one channel per producer subtask (channel ``i`` <- producer ``i``).

A consumer asks each producer of a gate for subpartition ``gate.subpartition``.
Edges with a ``kafka`` exchange have the same logical gates and partitions
(who may send to whom), but the bytes go through a topic, not netlayer; the
recovery protocol only signals over ``pipelined`` channels (see the
``exchange`` argument of `ExecutionGraph.producers_of`).

Pure data; built once from a validated `JobGraph` and never mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from streamer.graph.jobgraph import ExchangeType, GraphError, JobEdge, JobGraph, JobVertex

__all__ = ["ExecutionGraph", "InputGate", "ResultPartition", "TaskId"]


@dataclass(frozen=True, order=True)
class TaskId:
    """One parallel instance of a vertex; ``str(TaskId("join", 3)) == "join#3"``."""

    vertex_id: str
    subtask: int

    def __str__(self) -> str:
        return f"{self.vertex_id}#{self.subtask}"

    @classmethod
    def parse(cls, text: str) -> TaskId:
        """Inverse of ``str``; `GraphError` for a malformed id."""
        vertex_id, sep, index = text.rpartition("#")
        if not sep or not vertex_id or not index.isdigit() or not index.isascii():
            raise GraphError(f"bad task id {text!r}: expected '<vertex_id>#<subtask>'")
        return cls(vertex_id, int(index))


@dataclass(frozen=True)
class InputGate:
    """The input side of ``consumer`` for one input edge.

    ``channels[c]`` is the producer feeding channel ``c``; from each of them
    the consumer requests subpartition ``subpartition`` of the partition
    ``ResultPartition.make_id(edge, producer)``.
    """

    consumer: TaskId
    edge: JobEdge
    channels: tuple[TaskId, ...]

    @property
    def gate_index(self) -> int:
        """Which input of the consumer this gate is (the edge's ``input_index``)."""
        return self.edge.input_index

    @property
    def exchange(self) -> ExchangeType:
        """How the bytes travel over this gate's channels."""
        return self.edge.exchange

    @property
    def subpartition(self) -> int:
        """The subpartition index this consumer reads in each producer's partition."""
        return self.consumer.subtask if self.edge.is_all_to_all else 0

    def find_channel(self, producer: TaskId) -> int | None:
        """The channel index fed by ``producer``, or None; O(1): channel ``c`` of an
        all-to-all gate is producer subtask ``c``, a forward gate has channel 0 only."""
        c = producer.subtask if self.edge.is_all_to_all else 0
        if c < len(self.channels) and self.channels[c] == producer:
            return c
        return None

    def channel_of(self, producer: TaskId) -> int:
        """The channel index fed by ``producer``; `GraphError` if it feeds none."""
        c = self.find_channel(producer)
        if c is None:
            raise GraphError(f"{producer} does not feed gate {self.gate_index} of {self.consumer}")
        return c


@dataclass(frozen=True)
class ResultPartition:
    """The output of ``producer`` for one output edge; ``subpartitions[s]`` is a consumer."""

    producer: TaskId
    edge: JobEdge
    subpartitions: tuple[TaskId, ...]

    @staticmethod
    def make_id(edge: JobEdge, producer: TaskId) -> str:
        """The partition id: ``"<edge_id>@<producer subtask>"``."""
        return f"{edge.edge_id}@{producer.subtask}"

    @property
    def partition_id(self) -> str:
        """Unique in the job; what a consumer's ``PartitionRequest`` names."""
        return self.make_id(self.edge, self.producer)

    @property
    def exchange(self) -> ExchangeType:
        """How the bytes travel to the consumers."""
        return self.edge.exchange

    def find_subpartition(self, consumer: TaskId) -> int | None:
        """The subpartition index read by ``consumer``, or None; O(1) like
        `InputGate.find_channel`."""
        s = consumer.subtask if self.edge.is_all_to_all else 0
        if s < len(self.subpartitions) and self.subpartitions[s] == consumer:
            return s
        return None

    def subpartition_of(self, consumer: TaskId) -> int:
        """The subpartition index read by ``consumer``; `GraphError` if it reads none."""
        s = self.find_subpartition(consumer)
        if s is None:
            raise GraphError(f"{consumer} does not read partition {self.partition_id}")
        return s


@dataclass(frozen=True)
class ExecutionGraph:
    """Tasks, input gates and result partitions of a `JobGraph` (see the module docstring)."""

    job_graph: JobGraph
    tasks: tuple[TaskId, ...]
    gates: Mapping[TaskId, tuple[InputGate, ...]] = field(repr=False)
    partitions: Mapping[TaskId, tuple[ResultPartition, ...]] = field(repr=False)

    @classmethod
    def from_job_graph(cls, jg: JobGraph) -> ExecutionGraph:
        """Expand every vertex into ``parallelism`` subtasks and wire their channels.

        ``tasks`` is in the job graph's topological vertex order, then by subtask.
        """
        tasks: list[TaskId] = []
        for vid in jg.topological_order():
            tasks.extend(TaskId(vid, i) for i in range(jg.vertex(vid).parallelism))
        gates: dict[TaskId, list[InputGate]] = {t: [] for t in tasks}
        partitions: dict[TaskId, list[ResultPartition]] = {t: [] for t in tasks}
        for vid in jg.topological_order():
            for edge in jg.outputs_of(vid):
                src, dst = jg.vertex(edge.source_vertex), jg.vertex(edge.target_vertex)
                for p in _subtasks(src):
                    partitions[p].append(ResultPartition(p, edge, _consumers(edge, p, dst)))
        for vid in jg.topological_order():
            for edge in jg.inputs_of(vid):
                src, dst = jg.vertex(edge.source_vertex), jg.vertex(edge.target_vertex)
                for c in _subtasks(dst):
                    gates[c].append(InputGate(c, edge, _producers(edge, c, src)))
        return cls(
            job_graph=jg,
            tasks=tuple(tasks),
            gates={t: tuple(g) for t, g in gates.items()},
            partitions={t: tuple(p) for t, p in partitions.items()},
        )

    # -- lookups ---------------------------------------------------------------

    def _check(self, task: TaskId) -> None:
        if task not in self.gates:
            raise GraphError(f"unknown task {task} in job '{self.job_graph.job_name}'")

    def tasks_of(self, vertex_id: str) -> tuple[TaskId, ...]:
        """The subtasks of a vertex, by subtask index."""
        return tuple(
            TaskId(vertex_id, i) for i in range(self.job_graph.vertex(vertex_id).parallelism)
        )

    def vertex_of(self, task: TaskId) -> JobVertex:
        """The job vertex a task runs."""
        self._check(task)
        return self.job_graph.vertex(task.vertex_id)

    def input_gates(self, task: TaskId) -> tuple[InputGate, ...]:
        """The task's input gates, ordered by gate index (= input index)."""
        self._check(task)
        return self.gates[task]

    def result_partitions(self, task: TaskId) -> tuple[ResultPartition, ...]:
        """The task's result partitions, in the job graph's output edge order."""
        self._check(task)
        return self.partitions[task]

    def producers_of(
        self, task: TaskId, exchange: ExchangeType | None = None
    ) -> tuple[TaskId, ...]:
        """The distinct tasks feeding ``task`` directly (sorted), optionally of one exchange type.

        With ``exchange=ExchangeType.PIPELINED``: the tasks to tell ``ConsumerFailed``.
        """
        return _distinct(
            p
            for g in self.input_gates(task)
            if exchange is None or g.exchange == exchange
            for p in g.channels
        )

    def consumers_of(
        self, task: TaskId, exchange: ExchangeType | None = None
    ) -> tuple[TaskId, ...]:
        """The distinct tasks ``task`` feeds directly (sorted), optionally of one exchange type.

        With ``exchange=ExchangeType.PIPELINED``: the tasks to tell ``ProducerFailed``.
        """
        return _distinct(
            c
            for rp in self.result_partitions(task)
            if exchange is None or rp.exchange == exchange
            for c in rp.subpartitions
        )

    def channels_between(self, producer: TaskId, consumer: TaskId) -> tuple[tuple[int, int], ...]:
        """``(gate_index, channel_index)`` of every channel of ``consumer`` fed by ``producer``.

        Usually one; several when the same stream feeds several inputs (a self-join).
        """
        self._check(producer)
        found = ((g.gate_index, g.find_channel(producer)) for g in self.input_gates(consumer))
        return tuple((gate, c) for gate, c in found if c is not None)

    def upstream(self, task: TaskId) -> frozenset[TaskId]:
        """Every task ``task`` transitively depends on (excluding itself)."""
        return self._closure(task, self.producers_of)

    def downstream(self, task: TaskId) -> frozenset[TaskId]:
        """Every task transitively depending on ``task`` (excluding itself)."""
        return self._closure(task, self.consumers_of)

    @staticmethod
    def _closure(task: TaskId, step: Callable[[TaskId], tuple[TaskId, ...]]) -> frozenset[TaskId]:
        seen: set[TaskId] = set()
        todo = list(step(task))
        while todo:
            t = todo.pop()
            if t not in seen:
                seen.add(t)
                todo.extend(step(t))
        return frozenset(seen)


def _subtasks(v: JobVertex) -> list[TaskId]:
    return [TaskId(v.vertex_id, i) for i in range(v.parallelism)]


def _consumers(edge: JobEdge, producer: TaskId, dst: JobVertex) -> tuple[TaskId, ...]:
    if edge.is_all_to_all:
        return tuple(_subtasks(dst))
    return (TaskId(dst.vertex_id, producer.subtask),)


def _producers(edge: JobEdge, consumer: TaskId, src: JobVertex) -> tuple[TaskId, ...]:
    if edge.is_all_to_all:
        return tuple(_subtasks(src))
    return (TaskId(src.vertex_id, consumer.subtask),)


def _distinct(tasks: Iterable[TaskId]) -> tuple[TaskId, ...]:
    return tuple(sorted(set(tasks)))
