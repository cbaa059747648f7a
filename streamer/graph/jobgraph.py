"""The logical graph of a job: frozen, plain data, JSON round-trippable.

A `JobGraph` holds `JobVertex`es (each an operator chain run by
``parallelism`` subtasks) and `JobEdge`s (a partitioner plus an exchange
type). It contains no user code: an operator refers to its callables by uid,
and every process rebuilds the callables by importing the job module (see
``streamer.api``).

Contract: a `JobGraph` instance is always valid. The constructor checks it and
raises `GraphError` (one-line message) otherwise, so ``from_json`` and every
builder get the same checks. All types here are immutable, compare by value
and hold nothing but str/int/enums/tuples and the JSON-able ``config`` dicts.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from streamer.errors import StreamerError
from streamer.graph.keygroups import DEFAULT_MAX_PARALLELISM

__all__ = [
    "ExchangeType",
    "GraphError",
    "JobEdge",
    "JobGraph",
    "JobVertex",
    "OperatorKind",
    "OperatorSpec",
    "Partitioner",
]

FORMAT_VERSION = 1


class GraphError(StreamerError, ValueError):
    """A job graph (or the job that builds it) is invalid; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class Partitioner(enum.StrEnum):
    """How a producer subtask picks the consumer subtask(s) of a record."""

    FORWARD = "forward"  # producer i -> consumer i (equal parallelism)
    HASH = "hash"  # by key group of the record's key
    REBALANCE = "rebalance"  # round robin
    BROADCAST = "broadcast"  # every consumer


class ExchangeType(enum.StrEnum):
    """How records travel over an edge."""

    PIPELINED = "pipelined"  # netlayer, in memory, task to task
    KAFKA = "kafka"  # persisted through an internal Kafka topic; cuts pipelined regions


class OperatorKind(enum.StrEnum):
    """The kinds of operators a chain may hold."""

    KAFKA_SOURCE = "kafka_source"
    MAP = "map"
    FILTER = "filter"
    FLAT_MAP = "flat_map"
    PROCESS = "process"  # keyed process function over config["inputs"] keyed inputs
    JOIN = "join"  # keyed interval join over config["inputs"] (>= 2) keyed inputs
    KAFKA_SINK = "kafka_sink"


KEYED_KINDS = frozenset({OperatorKind.PROCESS, OperatorKind.JOIN})
"""Kinds whose inputs are all hash edges; such an operator always heads its vertex."""


def _normalize_json(value: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        data = orjson.loads(orjson.dumps(value))
    except (orjson.JSONEncodeError, TypeError) as exc:
        raise GraphError(f"{what}: config is not JSON-able: {exc}") from None
    if not isinstance(data, dict):
        raise GraphError(f"{what}: config must be a dict")
    return data


@dataclass(frozen=True)
class OperatorSpec:
    """One operator: its uid (unique in the job), display name, kind and config.

    ``config`` holds JSON-able data only; it is normalized on construction to
    what JSON gives back (tuples become lists), so a JSON round trip is exact.
    The operator's main callable (if any) is ``Job.functions[uid]``.
    """

    uid: str
    name: str
    kind: OperatorKind
    config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.uid or "#" in self.uid or self.uid != self.uid.strip():
            raise GraphError(f"bad operator uid {self.uid!r}: must be non-empty, without '#'")
        try:
            kind = OperatorKind(self.kind)
        except ValueError:
            raise GraphError(f"operator '{self.uid}': unknown kind {self.kind!r}") from None
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "config", _normalize_json(self.config, f"operator '{self.uid}'"))
        if kind in KEYED_KINDS:
            n = self.config.get("inputs")
            least = 2 if kind == OperatorKind.JOIN else 1
            if not isinstance(n, int) or isinstance(n, bool) or n < least:
                raise GraphError(
                    f"operator '{self.uid}': a {kind} needs config 'inputs' >= {least}, got {n!r}"
                )

    def __hash__(self) -> int:
        return hash((self.uid, self.kind))

    @property
    def inputs(self) -> int:
        """How many input edges this operator takes when it heads a vertex."""
        if self.kind == OperatorKind.KAFKA_SOURCE:
            return 0
        if self.kind in KEYED_KINDS:
            n: int = self.config["inputs"]  # checked on construction
            return n
        return 1


@dataclass(frozen=True)
class JobVertex:
    """An operator chain run as ``parallelism`` subtasks; its id is the head operator's uid."""

    vertex_id: str
    name: str
    operators: tuple[OperatorSpec, ...]
    parallelism: int
    max_parallelism: int = DEFAULT_MAX_PARALLELISM

    def __post_init__(self) -> None:
        object.__setattr__(self, "operators", tuple(self.operators))

    @property
    def head(self) -> OperatorSpec:
        """The first operator of the chain (it receives the vertex's input edges)."""
        return self.operators[0]

    @property
    def tail(self) -> OperatorSpec:
        """The last operator of the chain (it feeds the vertex's output edges)."""
        return self.operators[-1]


@dataclass(frozen=True, order=True)
class JobEdge:
    """A data stream from ``source_vertex`` into input ``input_index`` of ``target_vertex``.

    ``key_fn_uid`` names the key function (in ``Job.functions``) of a ``hash``
    edge; records go to the target subtask owning their key group, computed
    with the *target* vertex's ``max_parallelism``. ``topic`` names the
    internal topic of a ``kafka`` exchange.
    """

    source_vertex: str
    target_vertex: str
    partitioner: Partitioner
    exchange: ExchangeType = ExchangeType.PIPELINED
    input_index: int = 0
    key_fn_uid: str | None = None
    topic: str | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "partitioner", Partitioner(self.partitioner))
            object.__setattr__(self, "exchange", ExchangeType(self.exchange))
        except ValueError as exc:
            raise GraphError(f"edge {self.source_vertex} -> {self.target_vertex}: {exc}") from None

    @property
    def edge_id(self) -> str:
        """Unique within a graph: ``"<source>-><target>/<input_index>"``."""
        return f"{self.source_vertex}->{self.target_vertex}/{self.input_index}"

    @property
    def is_all_to_all(self) -> bool:
        """True unless the edge is ``forward`` (every producer may feed every consumer)."""
        return self.partitioner != Partitioner.FORWARD


@dataclass(frozen=True)
class JobGraph:
    """The validated logical graph of a job (see the module docstring)."""

    job_name: str
    vertices: tuple[JobVertex, ...]
    edges: tuple[JobEdge, ...] = ()
    _by_id: Mapping[str, JobVertex] = field(init=False, repr=False, compare=False)
    _inputs: Mapping[str, tuple[JobEdge, ...]] = field(init=False, repr=False, compare=False)
    _outputs: Mapping[str, tuple[JobEdge, ...]] = field(init=False, repr=False, compare=False)
    _topo: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "vertices", tuple(self.vertices))
        object.__setattr__(self, "edges", tuple(self.edges))
        by_id = _check_vertices(self.job_name, self.vertices)
        inputs, outputs = _check_edges(by_id, self.edges)
        object.__setattr__(self, "_by_id", by_id)
        object.__setattr__(self, "_inputs", inputs)
        object.__setattr__(self, "_outputs", outputs)
        object.__setattr__(self, "_topo", _topological_order(self.vertices, outputs))

    # -- lookups ---------------------------------------------------------------

    def vertex(self, vertex_id: str) -> JobVertex:
        """The vertex with this id; `GraphError` if there is none."""
        try:
            return self._by_id[vertex_id]
        except KeyError:
            raise GraphError(f"unknown vertex '{vertex_id}' in job '{self.job_name}'") from None

    def inputs_of(self, vertex_id: str) -> tuple[JobEdge, ...]:
        """The input edges of a vertex, ordered by ``input_index``."""
        self.vertex(vertex_id)
        return self._inputs[vertex_id]

    def outputs_of(self, vertex_id: str) -> tuple[JobEdge, ...]:
        """The output edges of a vertex, in the graph's edge order."""
        self.vertex(vertex_id)
        return self._outputs[vertex_id]

    def topological_order(self) -> tuple[str, ...]:
        """Vertex ids, producers before consumers; ties keep the order of ``vertices``."""
        return self._topo

    def sources(self) -> tuple[str, ...]:
        """Ids of the vertices without inputs, in topological order."""
        return tuple(v for v in self._topo if not self._inputs[v])

    def sinks(self) -> tuple[str, ...]:
        """Ids of the vertices without outputs, in topological order."""
        return tuple(v for v in self._topo if not self._outputs[v])

    def operator(self, uid: str) -> OperatorSpec:
        """The operator with this uid, in whatever vertex it was chained into."""
        for v in self.vertices:
            for op in v.operators:
                if op.uid == uid:
                    return op
        raise GraphError(f"unknown operator '{uid}' in job '{self.job_name}'")

    # -- JSON ------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (what ``to_json`` encodes)."""
        return {
            "version": FORMAT_VERSION,
            "job_name": self.job_name,
            "vertices": [
                {
                    "vertex_id": v.vertex_id,
                    "name": v.name,
                    "parallelism": v.parallelism,
                    "max_parallelism": v.max_parallelism,
                    "operators": [
                        {"uid": o.uid, "name": o.name, "kind": str(o.kind), "config": o.config}
                        for o in v.operators
                    ],
                }
                for v in self.vertices
            ],
            "edges": [
                {
                    "source_vertex": e.source_vertex,
                    "target_vertex": e.target_vertex,
                    "partitioner": str(e.partitioner),
                    "exchange": str(e.exchange),
                    "input_index": e.input_index,
                    "key_fn_uid": e.key_fn_uid,
                    "topic": e.topic,
                }
                for e in self.edges
            ],
        }

    def to_json(self) -> bytes:
        """Deterministic JSON bytes (sorted keys); ``from_json`` gives back an equal graph."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_SORT_KEYS)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobGraph:
        """Inverse of ``to_dict``; `GraphError` for malformed or invalid data."""
        try:
            if data.get("version") != FORMAT_VERSION:
                raise GraphError(f"unsupported job graph version {data.get('version')!r}")
            vertices = tuple(
                JobVertex(
                    vertex_id=_typed(v, "vertex_id", str),
                    name=_typed(v, "name", str),
                    parallelism=_typed(v, "parallelism", int),
                    max_parallelism=_typed(v, "max_parallelism", int),
                    operators=tuple(
                        OperatorSpec(
                            uid=_typed(o, "uid", str),
                            name=_typed(o, "name", str),
                            kind=OperatorKind(_typed(o, "kind", str)),
                            config=_typed(o, "config", dict),
                        )
                        for o in _typed(v, "operators", list)
                    ),
                )
                for v in _typed(data, "vertices", list)
            )
            edges = tuple(
                JobEdge(
                    source_vertex=_typed(e, "source_vertex", str),
                    target_vertex=_typed(e, "target_vertex", str),
                    partitioner=Partitioner(_typed(e, "partitioner", str)),
                    exchange=ExchangeType(_typed(e, "exchange", str)),
                    input_index=_typed(e, "input_index", int),
                    key_fn_uid=_typed(e, "key_fn_uid", str, optional=True),
                    topic=_typed(e, "topic", str, optional=True),
                )
                for e in _typed(data, "edges", list)
            )
            return cls(job_name=_typed(data, "job_name", str), vertices=vertices, edges=edges)
        except GraphError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise GraphError(f"malformed job graph: {exc}") from None

    @classmethod
    def from_json(cls, data: bytes | str) -> JobGraph:
        """Parse ``to_json`` output; `GraphError` for malformed or invalid input."""
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise GraphError(f"job graph is not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise GraphError("malformed job graph: expected a JSON object")
        return cls.from_dict(obj)


def _typed(data: Any, key: str, typ: type, *, optional: bool = False) -> Any:
    if not isinstance(data, Mapping):
        raise TypeError(f"expected an object around '{key}'")
    value = data[key]
    if value is None and optional:
        return None
    if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
        raise TypeError(f"'{key}' must be {typ.__name__}, got {type(value).__name__}")
    return value


# -- validation ----------------------------------------------------------------


def _check_vertices(job_name: str, vertices: tuple[JobVertex, ...]) -> dict[str, JobVertex]:
    if not isinstance(job_name, str) or not job_name.strip():
        raise GraphError("job name must be a non-empty string")
    if not vertices:
        raise GraphError(f"job '{job_name}' has no vertices")
    by_id: dict[str, JobVertex] = {}
    uids: set[str] = set()
    for v in vertices:
        where = f"vertex '{v.vertex_id}'"
        if not v.vertex_id or "#" in v.vertex_id:
            raise GraphError(f"bad vertex id {v.vertex_id!r}: must be non-empty, without '#'")
        if v.vertex_id in by_id:
            raise GraphError(f"duplicate vertex id '{v.vertex_id}'")
        by_id[v.vertex_id] = v
        if v.max_parallelism < 1:
            raise GraphError(f"{where}: max_parallelism must be >= 1, got {v.max_parallelism}")
        if v.parallelism < 1:
            raise GraphError(f"{where}: parallelism must be >= 1, got {v.parallelism}")
        if v.parallelism > v.max_parallelism:
            raise GraphError(
                f"{where}: parallelism {v.parallelism} exceeds max_parallelism {v.max_parallelism}"
            )
        if not v.operators:
            raise GraphError(f"{where} has no operators")
        if v.head.uid != v.vertex_id:
            raise GraphError(f"{where}: its id must be its head operator's uid '{v.head.uid}'")
        for i, op in enumerate(v.operators):
            if op.uid in uids:
                raise GraphError(f"duplicate operator uid '{op.uid}'")
            uids.add(op.uid)
            if i > 0 and (op.inputs != 1 or op.kind in KEYED_KINDS):
                raise GraphError(f"{where}: a {op.kind} operator ('{op.uid}') must head its vertex")
            if op.kind == OperatorKind.KAFKA_SINK and i != len(v.operators) - 1:
                raise GraphError(f"{where}: a kafka_sink ('{op.uid}') must end its chain")
    return by_id


def _check_edges(
    by_id: Mapping[str, JobVertex], edges: tuple[JobEdge, ...]
) -> tuple[dict[str, tuple[JobEdge, ...]], dict[str, tuple[JobEdge, ...]]]:
    inputs: dict[str, list[JobEdge]] = {v: [] for v in by_id}
    outputs: dict[str, list[JobEdge]] = {v: [] for v in by_id}
    for e in edges:
        where = f"edge {e.source_vertex} -> {e.target_vertex}"
        for end in (e.source_vertex, e.target_vertex):
            if end not in by_id:
                raise GraphError(f"{where}: unknown vertex '{end}'")
        src, dst = by_id[e.source_vertex], by_id[e.target_vertex]
        if e.partitioner == Partitioner.FORWARD and src.parallelism != dst.parallelism:
            raise GraphError(
                f"forward {where} needs equal parallelism, got {src.parallelism} and "
                f"{dst.parallelism}; use rebalance() or set_parallelism()"
            )
        if e.partitioner == Partitioner.HASH and not e.key_fn_uid:
            raise GraphError(f"hash {where} has no key function")
        if e.exchange == ExchangeType.KAFKA and not e.topic:
            raise GraphError(f"kafka exchange {where} has no topic")
        if e.exchange == ExchangeType.PIPELINED and e.topic is not None:
            raise GraphError(f"pipelined {where} must not name a topic")
        if src.tail.kind == OperatorKind.KAFKA_SINK:
            raise GraphError(f"{where}: vertex '{src.vertex_id}' ends in a sink and has no output")
        inputs[e.target_vertex].append(e)
        outputs[e.source_vertex].append(e)
    for vid, ins in inputs.items():
        ins.sort(key=lambda e: e.input_index)
        head = by_id[vid].head
        indices = [e.input_index for e in ins]
        if indices != list(range(len(ins))):
            raise GraphError(
                f"vertex '{vid}': input indices must be 0..{len(ins) - 1}, got {indices}"
            )
        expected = head.inputs
        if len(ins) != expected:
            raise GraphError(
                f"vertex '{vid}': its {head.kind} head expects {expected} input(s), has {len(ins)}"
            )
        if head.kind in KEYED_KINDS:
            for e in ins:
                if e.partitioner != Partitioner.HASH:
                    raise GraphError(
                        f"vertex '{vid}': input {e.input_index} of a keyed {head.kind} "
                        f"must be a hash edge (key_by), got {e.partitioner}"
                    )
    return (
        {v: tuple(es) for v, es in inputs.items()},
        {v: tuple(es) for v, es in outputs.items()},
    )


def topological_order(
    ids: Sequence[str], successors: Mapping[str, Iterable[str]], what: str
) -> list[str]:
    """Kahn's order of ``ids`` (ties broken by their order in ``ids``).

    Raises `GraphError` naming ``what`` (e.g. "job graph has a cycle; vertices")
    and the ids left unordered when there is a cycle.
    """
    position = {x: i for i, x in enumerate(ids)}
    pending = dict.fromkeys(ids, 0)
    for x in ids:
        for target in successors[x]:
            pending[target] += 1
    ready = [x for x in ids if pending[x] == 0]
    order: list[str] = []
    while ready:
        x = ready.pop(0)
        order.append(x)
        for target in successors[x]:
            pending[target] -= 1
            if pending[target] == 0:
                ready.append(target)
                ready.sort(key=position.__getitem__)
    if len(order) != len(ids):
        stuck = [x for x in ids if pending[x] > 0]
        raise GraphError(f"{what} left unordered: {', '.join(stuck)}")
    return order


def _topological_order(
    vertices: Iterable[JobVertex], outputs: Mapping[str, tuple[JobEdge, ...]]
) -> tuple[str, ...]:
    ids = [v.vertex_id for v in vertices]
    successors = {v: [e.target_vertex for e in outputs[v]] for v in ids}
    return tuple(topological_order(ids, successors, "job graph has a cycle; vertices"))
