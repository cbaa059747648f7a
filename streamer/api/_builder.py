"""The mutable graph under construction behind `StreamEnvironment` and `DataStream`.

Not thread-safe; a job is built by one thread, once per process.

Uid scheme (deterministic, so every process that re-runs the builder gets the
same uids): an operator the user named gets its name as uid, with every run of
characters outside ``[A-Za-z0-9_.-]`` replaced by ``-``; an unnamed one gets
``"<kind>-<n>"``, ``n`` counting the operators of that kind in creation order
(naming an operator does not renumber the others). Unnamed operators are
displayed under their uid. Names and uids must be unique in a job. Auxiliary
callables get ``"<operator uid>/<role>"``: ``/key<i>`` for the key function of
input ``i``, ``/timestamp_assigner`` for a source, ``/key_fn`` for a sink.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamer.api.job import Job
from streamer.graph import (
    ExchangeType,
    GraphError,
    OperatorKind,
    OperatorSpec,
    Partitioner,
    StreamEdge,
    StreamNode,
    chain,
)

__all__ = ["Builder", "Node", "Pending", "check_parallelism_arg"]

_UID_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def check_parallelism_arg(parallelism: int | None) -> int | None:
    """Validate a user-given parallelism (``None`` means the environment default)."""
    if parallelism is not None and (
        not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1
    ):
        raise GraphError(f"parallelism must be an int >= 1, got {parallelism!r}")
    return parallelism


def uid_for_name(name: str) -> str:
    """The operator uid derived from a user-given name."""
    uid = _UID_UNSAFE.sub("-", name).strip("-")
    if not uid:
        raise GraphError(f"operator name {name!r} has no letters or digits to derive a uid from")
    return uid


@dataclass(frozen=True)
class Pending:
    """How the next edge out of a stream is exchanged (set by rebalance/key_by/exchange...)."""

    partitioner: Partitioner | None = None  # None: forward if parallelisms match, else rebalance
    exchange: ExchangeType = ExchangeType.PIPELINED
    topic: str | None = None
    key_fn: Callable[[Any], Any] | None = None

    def with_partitioner(
        self, partitioner: Partitioner, key_fn: Callable[[Any], Any] | None = None
    ) -> Pending:
        """A copy with the partitioner set; `GraphError` if another one is already set."""
        if self.partitioner is not None and self.partitioner != partitioner:
            raise GraphError(
                f"the stream is already partitioned by {self.partitioner}; "
                f"cannot also use {partitioner}"
            )
        return Pending(partitioner, self.exchange, self.topic, key_fn)

    def with_exchange(self, exchange: ExchangeType, topic: str | None) -> Pending:
        """A copy with the exchange type set; `GraphError` on a bad or conflicting request."""
        if exchange == ExchangeType.KAFKA and (not isinstance(topic, str) or not topic):
            raise GraphError("a kafka exchange needs a topic: exchange('kafka', topic='...')")
        if exchange == ExchangeType.PIPELINED and topic is not None:
            raise GraphError("a pipelined exchange takes no topic")
        if self.exchange == ExchangeType.KAFKA and (exchange, topic) != (self.exchange, self.topic):
            raise GraphError(f"the stream already goes through kafka topic '{self.topic}'")
        return Pending(self.partitioner, exchange, topic, self.key_fn)


@dataclass(eq=False)
class Node:
    """One operator under construction; uid and final config are assigned by `Builder.build`."""

    kind: OperatorKind
    index: int  # per-kind creation index
    config: dict[str, Any]
    fn: Callable[..., Any] | None = None
    aux: dict[str, Callable[..., Any] | None] = field(default_factory=dict)  # role -> callable
    user_name: str | None = None
    parallelism: int | None = None  # None: resolved by Builder.build


@dataclass(eq=False)
class _Edge:
    source: Node
    target: Node
    input_index: int
    pending: Pending


class Builder:
    """Collects nodes and edges in creation order and turns them into a `Job`."""

    def __init__(self, job_name: str, default_parallelism: int, max_parallelism: int) -> None:
        self.job_name = job_name
        self.default_parallelism = default_parallelism
        self.max_parallelism = max_parallelism
        self._nodes: list[Node] = []
        self._edges: list[_Edge] = []
        self._counters: dict[OperatorKind, int] = {}

    def add_node(
        self,
        kind: OperatorKind,
        config: dict[str, Any],
        *,
        fn: Callable[..., Any] | None = None,
        aux: dict[str, Callable[..., Any] | None] | None = None,
        name: str | None = None,
        parallelism: int | None = None,
    ) -> Node:
        """Append a node (numbered per kind in creation order)."""
        if fn is not None and not callable(fn):
            raise TypeError(f"{kind} expects a callable, got {type(fn).__name__}")
        for role, f in (aux or {}).items():
            if f is not None and not callable(f):
                raise TypeError(f"{role} must be callable, got {type(f).__name__}")
        index = self._counters.get(kind, 0)
        self._counters[kind] = index + 1
        node = Node(kind, index, config, fn, dict(aux or {}), None, None)
        self.set_parallelism(node, parallelism)
        if name is not None:
            self.set_name(node, name)
        self._nodes.append(node)
        return node

    def add_edge(self, source: Node, target: Node, input_index: int, pending: Pending) -> None:
        """Connect ``source`` to input ``input_index`` of ``target``."""
        self._edges.append(_Edge(source, target, input_index, pending))

    def set_name(self, node: Node, name: str) -> None:
        """Name a node; `GraphError` if another node already has this name."""
        if not isinstance(name, str) or not name.strip():
            raise GraphError(f"operator name must be a non-empty string, got {name!r}")
        uid_for_name(name)
        if any(n is not node and n.user_name == name for n in self._nodes):
            raise GraphError(f"duplicate operator name '{name}': names must be unique in a job")
        node.user_name = name

    def set_parallelism(self, node: Node, parallelism: int | None) -> None:
        """Set a node's parallelism (``None``: inherit its single input's, else the default)."""
        node.parallelism = check_parallelism_arg(parallelism)

    def build(self) -> Job:
        """Assign uids, resolve defaults, chain and validate; `GraphError` if invalid."""
        if not self._nodes:
            raise GraphError(
                f"job '{self.job_name}' has no operators; start with env.from_kafka(...)"
            )
        uids = self._assign_uids()
        parallelism = self._resolve_parallelism()
        functions: dict[str, Callable[..., Any]] = {}
        stream_nodes: list[StreamNode] = []
        for node in self._nodes:
            uid = uids[id(node)]
            config = dict(node.config)
            if node.fn is not None:
                functions[uid] = node.fn
            for role, f in node.aux.items():
                config[role] = None if f is None else f"{uid}/{role}"
                if f is not None:
                    functions[f"{uid}/{role}"] = f
            op = OperatorSpec(uid=uid, name=node.user_name or uid, kind=node.kind, config=config)
            stream_nodes.append(StreamNode(op, parallelism[id(node)], self.max_parallelism))
        stream_edges: list[StreamEdge] = []
        for e in self._edges:
            target_uid = uids[id(e.target)]
            key_uid = None
            if e.pending.key_fn is not None:
                key_uid = f"{target_uid}/key{e.input_index}"
                functions[key_uid] = e.pending.key_fn
            partitioner = e.pending.partitioner
            if partitioner is None:
                same = parallelism[id(e.source)] == parallelism[id(e.target)]
                partitioner = Partitioner.FORWARD if same else Partitioner.REBALANCE
            stream_edges.append(
                StreamEdge(
                    source=uids[id(e.source)],
                    target=target_uid,
                    partitioner=partitioner,
                    exchange=e.pending.exchange,
                    input_index=e.input_index,
                    key_fn_uid=key_uid,
                    topic=e.pending.topic,
                )
            )
        return Job(chain(self.job_name, stream_nodes, stream_edges), functions)

    def _resolve_parallelism(self) -> dict[int, int]:
        """Explicit, else the single input's (resolved) parallelism, else the default."""
        inputs: dict[int, list[Node]] = {}
        for e in self._edges:
            inputs.setdefault(id(e.target), []).append(e.source)
        resolved: dict[int, int] = {}
        for node in self._nodes:  # creation order: a node's inputs were created before it
            ins = inputs.get(id(node), [])
            if node.parallelism is not None:
                resolved[id(node)] = node.parallelism
            elif len(ins) == 1:
                resolved[id(node)] = resolved[id(ins[0])]
            else:
                resolved[id(node)] = self.default_parallelism
        return resolved

    def _assign_uids(self) -> dict[int, str]:
        uids: dict[int, str] = {}
        owner: dict[str, str] = {}  # uid -> the name (or kind) that produced it
        names: set[str] = set()
        for node in self._nodes:
            if node.user_name is not None:
                if node.user_name in names:
                    raise GraphError(f"duplicate operator name '{node.user_name}'")
                names.add(node.user_name)
                uid, origin = uid_for_name(node.user_name), f"name '{node.user_name}'"
            else:
                uid = f"{node.kind}-{node.index}"
                origin = f"the unnamed {node.kind} number {node.index}"
            if uid in owner:
                raise GraphError(
                    f"operator uid '{uid}' is derived from both {owner[uid]} and {origin}; "
                    "rename one of them"
                )
            owner[uid] = origin
            uids[id(node)] = uid
        return uids
