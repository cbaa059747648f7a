"""The ``kafka`` exchange in the graphs (FLIP-1's persisted exchange): pure functions.

A kafka edge carries its records through a topic instead of netlayer: the
producer vertex writes it (one partition per consumer subtask, transactionally
per checkpoint), the consumer vertex reads it read-committed with its offsets in
the checkpoints. It cuts pipelined regions (`streamer.graph.regions`), and its
consumer side starts checkpoints like a source (`starts_checkpoints`).

What the runtime supports, checked at submission by `check_kafka_exchanges`
(one line each): a kafka edge is its consumer vertex's only input and its
producer vertex's only output, its topic is no other edge's and no source's or
sink's. The runtime is `streamer.runtime.kafka_exchange`.
"""

from __future__ import annotations

from collections.abc import Mapping

from streamer.graph.execution import ExecutionGraph, TaskId
from streamer.graph.jobgraph import ExchangeType, GraphError, JobEdge, JobGraph, OperatorKind

__all__ = [
    "check_kafka_exchanges",
    "exchange_topics",
    "has_kafka_exchange",
    "kafka_input",
    "kafka_output",
    "starts_checkpoints",
]


def kafka_input(jg: JobGraph, vertex_id: str) -> JobEdge | None:
    """The kafka edge ``vertex_id`` reads, if any."""
    return next((e for e in jg.inputs_of(vertex_id) if e.exchange == ExchangeType.KAFKA), None)


def kafka_output(jg: JobGraph, vertex_id: str) -> JobEdge | None:
    """The kafka edge ``vertex_id`` writes, if any."""
    return next((e for e in jg.outputs_of(vertex_id) if e.exchange == ExchangeType.KAFKA), None)


def has_kafka_exchange(jg: JobGraph) -> bool:
    return any(e.exchange == ExchangeType.KAFKA for e in jg.edges)


def starts_checkpoints(eg: ExecutionGraph, task: TaskId) -> bool:
    """Whether the coordinator triggers checkpoints at ``task``: a Kafka source, or the
    consumer side of a kafka exchange (barriers do not cross the topic)."""
    vertex = eg.vertex_of(task)
    if vertex.operators[0].kind == OperatorKind.KAFKA_SOURCE:
        return True
    return kafka_input(eg.job_graph, vertex.vertex_id) is not None


def exchange_topics(jg: JobGraph) -> Mapping[str, int]:
    """Every kafka exchange's topic and the partitions it needs (its consumer's
    parallelism: one partition per consumer subtask)."""
    return {
        str(e.topic): jg.vertex(e.target_vertex).parallelism
        for e in jg.edges
        if e.exchange == ExchangeType.KAFKA
    }


def check_kafka_exchanges(jg: JobGraph) -> None:
    """`GraphError` (one line, saying what to do) for a kafka exchange the runtime
    cannot run; see the module docstring."""
    kafka = [e for e in jg.edges if e.exchange == ExchangeType.KAFKA]
    io_topics = {
        str(op.config.get("topic"))
        for v in jg.vertices
        for op in v.operators
        if op.kind in (OperatorKind.KAFKA_SOURCE, OperatorKind.KAFKA_SINK)
    }
    seen: set[str] = set()
    for e in kafka:
        topic = str(e.topic)
        where = f"the kafka exchange {e.source_vertex} -> {e.target_vertex} (topic '{topic}')"
        if len(jg.inputs_of(e.target_vertex)) > 1:
            raise GraphError(
                f"{where} is one of several inputs of '{e.target_vertex}': a kafka exchange "
                "must be its consumer's only input (exchange before the union or join instead)"
            )
        if len(jg.outputs_of(e.source_vertex)) > 1:
            raise GraphError(
                f"{where} is one of several outputs of '{e.source_vertex}': a kafka exchange "
                "must be its producer's only output (add a map after it for the other outputs)"
            )
        if topic in seen or topic in io_topics:
            raise GraphError(
                f"{where}: topic '{topic}' is used elsewhere in the job; give each kafka "
                "exchange a topic of its own"
            )
        seen.add(topic)
