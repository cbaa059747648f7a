"""Operator chaining: exact vertex composition and what breaks a chain."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.api import StreamEnvironment
from streamer.graph import (
    ExchangeType,
    GraphError,
    JobEdge,
    JobGraph,
    OperatorKind,
    OperatorSpec,
    Partitioner,
    StreamEdge,
    StreamNode,
    chain,
    is_chainable,
)


def ident(x: Any) -> Any:
    return x


def composition(jg: JobGraph) -> list[tuple[str, list[str], int]]:
    return [(v.vertex_id, [o.uid for o in v.operators], v.parallelism) for v in jg.vertices]


def edges(jg: JobGraph) -> list[tuple[str, str, str, str | None]]:
    return [(e.source_vertex, e.target_vertex, str(e.partitioner), e.key_fn_uid) for e in jg.edges]


def test_source_map_filter_sink_is_one_vertex() -> None:
    env = StreamEnvironment("j", default_parallelism=3)
    env.from_kafka("in").map(ident).filter(bool).flat_map(lambda x: [x]).to_kafka("out")
    jg = env.build().job_graph
    assert composition(jg) == [
        ("kafka_source-0", ["kafka_source-0", "map-0", "filter-0", "flat_map-0", "kafka_sink-0"], 3)
    ]
    assert (
        jg.vertices[0].name == "kafka_source-0 -> map-0 -> filter-0 -> flat_map-0 -> kafka_sink-0"
    )
    assert jg.edges == ()


def test_named_operators_give_vertex_ids_and_names() -> None:
    env = StreamEnvironment("j")
    env.from_kafka("in", name="Read orders").map(ident, name="parse").to_kafka("out", name="Write")
    jg = env.build().job_graph
    assert composition(jg) == [("Read-orders", ["Read-orders", "parse", "Write"], 1)]
    assert jg.vertices[0].name == "Read orders -> parse -> Write"


def test_key_by_breaks_the_chain() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    (
        env.from_kafka("in")
        .map(ident)
        .key_by(lambda r: r["k"])
        .process(ident)
        .map(ident)
        .to_kafka("out")
    )
    jg = env.build().job_graph
    assert composition(jg) == [
        ("kafka_source-0", ["kafka_source-0", "map-0"], 2),
        ("process-0", ["process-0", "map-1", "kafka_sink-0"], 2),
    ]
    assert edges(jg) == [("kafka_source-0", "process-0", "hash", "process-0/key0")]


def test_different_parallelism_breaks_the_chain() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    env.from_kafka("in").map(ident, parallelism=3).filter(bool).set_parallelism(3).to_kafka(
        "out", parallelism=3
    )
    jg = env.build().job_graph
    assert composition(jg) == [
        ("kafka_source-0", ["kafka_source-0"], 2),
        ("map-0", ["map-0", "filter-0", "kafka_sink-0"], 3),
    ]
    assert edges(jg) == [("kafka_source-0", "map-0", "rebalance", None)]


def test_explicit_partitioners_break_the_chain() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    env.from_kafka("in").rebalance().map(ident).broadcast().filter(bool).forward().to_kafka("out")
    jg = env.build().job_graph
    assert composition(jg) == [
        ("kafka_source-0", ["kafka_source-0"], 2),
        ("map-0", ["map-0"], 2),
        ("filter-0", ["filter-0", "kafka_sink-0"], 2),
    ]
    assert edges(jg) == [
        ("kafka_source-0", "map-0", "rebalance", None),
        ("map-0", "filter-0", "broadcast", None),
    ]


def test_kafka_exchange_breaks_a_forward_chain() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    env.from_kafka("in").exchange("kafka", topic="mid").map(ident).to_kafka("out")
    jg = env.build().job_graph
    assert composition(jg) == [
        ("kafka_source-0", ["kafka_source-0"], 2),
        ("map-0", ["map-0", "kafka_sink-0"], 2),
    ]
    assert jg.edges == (
        JobEdge("kafka_source-0", "map-0", Partitioner.FORWARD, ExchangeType.KAFKA, 0, None, "mid"),
    )


def test_fan_out_breaks_the_chain_but_each_branch_chains() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    s = env.from_kafka("in")
    s.map(ident).to_kafka("a")
    s.filter(bool).to_kafka("b")
    jg = env.build().job_graph
    assert composition(jg) == [
        ("kafka_source-0", ["kafka_source-0"], 2),
        ("map-0", ["map-0", "kafka_sink-0"], 2),
        ("filter-0", ["filter-0", "kafka_sink-1"], 2),
    ]
    assert edges(jg) == [
        ("kafka_source-0", "map-0", "forward", None),
        ("kafka_source-0", "filter-0", "forward", None),
    ]


def test_multi_input_operator_heads_its_vertex() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    a = env.from_kafka("a").key_by(lambda r: r[0])
    b = env.from_kafka("b").map(ident).key_by(lambda r: r[1])
    env.connect(a, b).process(ident, name="both").filter(bool).to_kafka("out")
    jg = env.build().job_graph
    assert composition(jg) == [
        ("kafka_source-0", ["kafka_source-0"], 2),
        ("kafka_source-1", ["kafka_source-1", "map-0"], 2),
        ("both", ["both", "filter-0", "kafka_sink-0"], 2),
    ]
    assert edges(jg) == [
        ("kafka_source-0", "both", "hash", "both/key0"),
        ("kafka_source-1", "both", "hash", "both/key1"),
    ]
    assert [e.input_index for e in jg.inputs_of("both")] == [0, 1]


def _node(uid: str, kind: OperatorKind, p: int = 1, **config: Any) -> StreamNode:
    return StreamNode(OperatorSpec(uid, uid, kind, config), p)


def test_chain_directly_from_stream_nodes() -> None:
    nodes = [
        _node("s", OperatorKind.KAFKA_SOURCE),
        _node("m", OperatorKind.MAP),
        _node("k", OperatorKind.KAFKA_SINK),
    ]
    fwd = Partitioner.FORWARD
    jg = chain("j", nodes, [StreamEdge("s", "m", fwd), StreamEdge("m", "k", fwd)])
    assert composition(jg) == [("s", ["s", "m", "k"], 1)]
    by_uid = {n.uid: n for n in nodes}
    degree = {"s": 1, "m": 1, "k": 1}
    assert is_chainable(StreamEdge("s", "m", fwd), by_uid, degree, degree)
    assert not is_chainable(StreamEdge("s", "m", fwd), by_uid, {**degree, "s": 2}, degree)
    assert not is_chainable(StreamEdge("s", "m", fwd), by_uid, degree, {**degree, "m": 2})
    assert not is_chainable(StreamEdge("s", "m", Partitioner.REBALANCE), by_uid, degree, degree)
    kafka = StreamEdge("s", "m", fwd, ExchangeType.KAFKA, topic="t")
    assert not is_chainable(kafka, by_uid, degree, degree)
    with pytest.raises(GraphError, match=r"^edge s -> x: unknown operator 'x'$"):
        chain("j", nodes, [StreamEdge("s", "x", fwd)])
    with pytest.raises(GraphError, match=r"^duplicate operator uid 's'$"):
        chain("j", [*nodes, nodes[0]], [])


def test_max_parallelism_mismatch_breaks_the_chain() -> None:
    s = StreamNode(OperatorSpec("s", "s", OperatorKind.KAFKA_SOURCE), 2, 128)
    m = StreamNode(OperatorSpec("m", "m", OperatorKind.MAP), 2, 64)
    jg = chain("j", [s, m], [StreamEdge("s", "m", Partitioner.FORWARD)])
    assert composition(jg) == [("s", ["s"], 2), ("m", ["m"], 2)]
