"""Operator chaining: one logical node per operator -> a `JobGraph` of chains.

The API describes a job as `StreamNode`s (one operator each) and `StreamEdge`s
between operator uids. `chain` merges an operator into its predecessor's
vertex when the edge between them is chainable (`is_chainable`): forward,
pipelined, equal parallelism and max parallelism, the predecessor has exactly
one output and the successor exactly one input. Chained operators run in one
task, calling each other directly; every other edge becomes a `JobEdge`.

A vertex's id is the uid of its head operator and its name joins the chain's
operator names with ``" -> "``. Pure functions; the output is validated by the
`JobGraph` constructor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from streamer.graph.jobgraph import (
    KEYED_KINDS,
    ExchangeType,
    GraphError,
    JobEdge,
    JobGraph,
    JobVertex,
    OperatorKind,
    OperatorSpec,
    Partitioner,
    topological_order,
)
from streamer.graph.keygroups import DEFAULT_MAX_PARALLELISM

__all__ = ["StreamEdge", "StreamNode", "chain", "is_chainable"]


@dataclass(frozen=True)
class StreamNode:
    """One operator with the parallelism it runs at."""

    op: OperatorSpec
    parallelism: int
    max_parallelism: int = DEFAULT_MAX_PARALLELISM

    @property
    def uid(self) -> str:
        """The operator's uid."""
        return self.op.uid


@dataclass(frozen=True)
class StreamEdge:
    """A stream between two operators (by uid); fields as in `JobEdge`."""

    source: str
    target: str
    partitioner: Partitioner
    exchange: ExchangeType = ExchangeType.PIPELINED
    input_index: int = 0
    key_fn_uid: str | None = None
    topic: str | None = None


def is_chainable(
    edge: StreamEdge,
    nodes: Mapping[str, StreamNode],
    out_degree: Mapping[str, int],
    in_degree: Mapping[str, int],
) -> bool:
    """Whether ``edge.target`` can run in the same task as ``edge.source``."""
    src, dst = nodes[edge.source], nodes[edge.target]
    return (
        edge.partitioner == Partitioner.FORWARD
        and edge.exchange == ExchangeType.PIPELINED
        and src.parallelism == dst.parallelism
        and src.max_parallelism == dst.max_parallelism
        and out_degree[edge.source] == 1
        and in_degree[edge.target] == 1
        and src.op.kind != OperatorKind.KAFKA_SINK
        and dst.op.kind != OperatorKind.KAFKA_SOURCE
        and dst.op.kind not in KEYED_KINDS
    )


def chain(job_name: str, nodes: Sequence[StreamNode], edges: Sequence[StreamEdge]) -> JobGraph:
    """Build the chained, validated `JobGraph`; `GraphError` if it is invalid."""
    by_uid: dict[str, StreamNode] = {}
    for n in nodes:
        if n.uid in by_uid:
            raise GraphError(f"duplicate operator uid '{n.uid}'")
        by_uid[n.uid] = n
    inputs: dict[str, list[StreamEdge]] = {u: [] for u in by_uid}
    outputs: dict[str, list[StreamEdge]] = {u: [] for u in by_uid}
    for e in edges:
        for end in (e.source, e.target):
            if end not in by_uid:
                raise GraphError(f"edge {e.source} -> {e.target}: unknown operator '{end}'")
        inputs[e.target].append(e)
        outputs[e.source].append(e)
    out_degree = {u: len(es) for u, es in outputs.items()}
    in_degree = {u: len(es) for u, es in inputs.items()}

    chain_of: dict[str, str] = {}  # operator uid -> head uid of its chain
    chains: dict[str, list[StreamNode]] = {}  # head uid -> operators, in topological order
    uids = [n.uid for n in nodes]
    successors = {u: [e.target for e in outputs[u]] for u in uids}
    for uid in topological_order(uids, successors, "job has a cycle; operators"):
        node = by_uid[uid]
        ins = inputs[uid]
        if len(ins) == 1 and is_chainable(ins[0], by_uid, out_degree, in_degree):
            head = chain_of[ins[0].source]
            chains[head].append(node)
            chain_of[uid] = head
        else:
            chains[uid] = [node]
            chain_of[uid] = uid

    vertices = tuple(
        JobVertex(
            vertex_id=head,
            name=" -> ".join(n.op.name for n in members),
            operators=tuple(n.op for n in members),
            parallelism=members[0].parallelism,
            max_parallelism=members[0].max_parallelism,
        )
        for head, members in chains.items()
    )
    job_edges = tuple(
        JobEdge(
            source_vertex=chain_of[e.source],
            target_vertex=chain_of[e.target],
            partitioner=e.partitioner,
            exchange=e.exchange,
            input_index=e.input_index,
            key_fn_uid=e.key_fn_uid,
            topic=e.topic,
        )
        for e in edges
        if chain_of[e.source] != chain_of[e.target]
    )
    return JobGraph(job_name=job_name, vertices=vertices, edges=job_edges)
