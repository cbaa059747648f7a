"""The fluent builder: uids, functions by uid, configs, defaults and one-line errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from streamer.api import Job, StreamEnvironment
from streamer.graph import ExchangeType, GraphError, OperatorKind, Partitioner


def ident(x: Any) -> Any:
    return x


def key_a(r: Any) -> Any:
    return r["a"]


def key_b(r: Any) -> Any:
    return r["b"]


def ts(r: Any) -> int:
    return int(r["ts"])


class Counter:
    """Stands in for a keyed process function class."""


def message(call: Callable[[], object]) -> str:
    with pytest.raises(GraphError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text
    return text


def full_job() -> Job:
    env = StreamEnvironment("full", default_parallelism=2)
    orders = env.from_kafka(
        "orders",
        start="latest",
        key_serde="bytes",
        timestamp_assigner=ts,
        max_out_of_orderness_ms=250,
    ).key_by(key_a)
    pays = env.from_kafka(
        "pays", name="Payments!", on_decode_error="dead_letter", dead_letter_topic="dlq"
    ).key_by(key_b)
    env.connect(orders, pays).process(Counter, name="count").to_kafka(
        "counts", delivery="exactly_once", key_fn=key_a
    )
    return env.build()


def test_uids_functions_and_configs() -> None:
    job = full_job()
    jg = job.job_graph
    assert [v.vertex_id for v in jg.vertices] == ["kafka_source-0", "Payments", "count"]
    src = jg.operator("kafka_source-0")
    assert src.config == {
        "topic": "orders",
        "start": "latest",
        "key_serde": "bytes",
        "value_serde": "json",
        "on_decode_error": "fail",
        "dead_letter_topic": None,
        "max_out_of_orderness_ms": 250,
        "bounded": False,
        "timestamp_assigner": "kafka_source-0/timestamp_assigner",
    }
    pays = jg.operator("Payments")
    assert pays.name == "Payments!"
    assert pays.config["on_decode_error"] == "dead_letter"
    assert pays.config["dead_letter_topic"] == "dlq"
    assert pays.config["timestamp_assigner"] is None
    count = jg.operator("count")
    assert count.kind is OperatorKind.PROCESS
    assert count.config == {"inputs": 2, "fn_kind": "class"}
    sink = jg.operator("kafka_sink-0")
    assert sink.config == {
        "topic": "counts",
        "delivery": "exactly_once",
        "key_serde": "str",
        "value_serde": "json",
        "key_fn": "kafka_sink-0/key_fn",
    }
    assert dict(job.functions) == {
        "kafka_source-0/timestamp_assigner": ts,
        "count": Counter,
        "count/key0": key_a,
        "count/key1": key_b,
        "kafka_sink-0/key_fn": key_a,
    }
    assert [e.key_fn_uid for e in jg.inputs_of("count")] == ["count/key0", "count/key1"]
    assert job.key_function(jg.inputs_of("count")[1]) is key_b
    assert job.operator_function(count) is Counter
    assert job.operator_function(src) is None
    assert job.function(src.config["timestamp_assigner"]) is ts
    assert job.name == "full"


def test_functions_are_read_only() -> None:
    job = full_job()
    with pytest.raises(TypeError):
        job.functions["x"] = ident  # type: ignore[index]
    assert message(lambda: job.function("nope")) == "job 'full' has no function 'nope'"


def test_same_code_gives_the_same_graph() -> None:
    a, b = full_job(), full_job()
    assert a.job_graph == b.job_graph
    assert a.job_graph.to_json() == b.job_graph.to_json()
    assert set(a.functions) == set(b.functions)
    a.check_graph(b.job_graph)
    env = StreamEnvironment("full")
    env.from_kafka("x").to_kafka("y")
    assert message(lambda: a.check_graph(env.build().job_graph)) == (
        "job 'full': the local job code builds a different graph than the submitted one; "
        "deploy the same job code everywhere"
    )


def test_build_twice_gives_equal_jobs() -> None:
    env = StreamEnvironment("j")
    env.from_kafka("x").map(ident).to_kafka("y")
    assert env.build().job_graph == env.build().job_graph


def test_unnamed_uids_count_per_kind_and_naming_does_not_renumber() -> None:
    env = StreamEnvironment("j")
    s = env.from_kafka("x")
    s.map(ident).to_kafka("a")
    s.map(ident, name="named").to_kafka("b")
    s.map(ident).filter(bool).to_kafka("c")
    uids = [o.uid for v in env.build().job_graph.vertices for o in v.operators]
    assert uids == [
        "kafka_source-0",
        "map-0",
        "kafka_sink-0",
        "named",
        "kafka_sink-1",
        "map-2",
        "filter-0",
        "kafka_sink-2",
    ]


def test_name_methods() -> None:
    env = StreamEnvironment("j")
    env.from_kafka("x").name("read").map(ident).name("  two  words ").to_kafka("y").name("write")
    ops = env.build().job_graph.vertices[0].operators
    assert [(o.uid, o.name) for o in ops] == [
        ("read", "read"),
        ("two-words", "  two  words "),
        ("write", "write"),
    ]


def test_duplicate_names() -> None:
    env = StreamEnvironment("j")
    s = env.from_kafka("x", name="read")
    assert message(lambda: env.from_kafka("y", name="read")) == (
        "duplicate operator name 'read': names must be unique in a job"
    )
    m = s.map(ident)
    assert message(lambda: m.name("read")) == (
        "duplicate operator name 'read': names must be unique in a job"
    )


def test_uid_collisions() -> None:
    env = StreamEnvironment("j")
    env.from_kafka("x", name="a b").map(ident, name="a-b")
    assert message(env.build) == (
        "operator uid 'a-b' is derived from both name 'a b' and name 'a-b'; rename one of them"
    )
    env = StreamEnvironment("j")
    env.from_kafka("x").map(ident, name="kafka_source-0")
    assert message(env.build) == (
        "operator uid 'kafka_source-0' is derived from both the unnamed kafka_source number 0 "
        "and name 'kafka_source-0'; rename one of them"
    )
    assert message(lambda: StreamEnvironment("j").from_kafka("x", name="!!")) == (
        "operator name '!!' has no letters or digits to derive a uid from"
    )


def test_parallelism_inheritance_and_default_partitioners() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    s = env.from_kafka("x", name="s")
    s.map(ident, name="wide", parallelism=4).map(ident, name="inherits").to_kafka("y", name="k")
    s.map(ident, name="narrow", parallelism=1)
    jg = env.build().job_graph
    assert [(v.vertex_id, v.parallelism, len(v.operators)) for v in jg.vertices] == [
        ("s", 2, 1),
        ("wide", 4, 3),
        ("narrow", 1, 1),
    ]
    assert [e.partitioner for e in jg.edges] == [Partitioner.REBALANCE, Partitioner.REBALANCE]


def test_multi_input_operators_get_the_default_parallelism() -> None:
    env = StreamEnvironment("j", default_parallelism=3)
    a = env.from_kafka("a", parallelism=1).key_by(key_a)
    b = env.from_kafka("b", parallelism=1).key_by(key_b)
    a.join(b, lower_ms=-5, upper_ms=5, fn=ident, name="j").to_kafka("out")
    jg = env.build().job_graph
    assert jg.vertex("j").parallelism == 3
    assert jg.vertex("j").head.config == {
        "inputs": 2,
        "lower_ms": -5,
        "upper_ms": 5,
        "has_fn": True,
        "late_topic": None,
    }
    assert [o.uid for o in jg.vertex("j").operators] == ["j", "kafka_sink-0"]


def test_connect_forms() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    a = env.from_kafka("a", name="a").key_by(key_a)
    b = env.from_kafka("b", name="b").key_by(key_b)
    c = env.from_kafka("c", name="c").key_by(key_a)
    connected = a.connect(b, c)
    assert connected.inputs == 3
    connected.process(ident, name="p")
    connected.interval_join(lower_ms=0, upper_ms=0, name="ij")
    b.process(ident, name="single")
    job = env.build()
    jg = job.job_graph
    assert [e.source_vertex for e in jg.inputs_of("p")] == ["a", "b", "c"]
    assert [e.source_vertex for e in jg.inputs_of("ij")] == ["a", "b", "c"]
    assert jg.vertex("p").head.config == {"inputs": 3, "fn_kind": "function"}
    assert jg.vertex("single").head.config == {"inputs": 1, "fn_kind": "function"}
    assert jg.operator("ij").kind is OperatorKind.JOIN
    assert "ij" not in job.functions  # a join without fn emits the list of matched records
    assert job.functions["ij/key2"] is key_a


def test_keyed_kafka_exchange() -> None:
    env = StreamEnvironment("j")
    env.from_kafka("a", name="a").key_by(key_a).exchange("kafka", topic="t").process(
        ident, name="p"
    )
    (e,) = env.build().job_graph.edges
    assert (e.partitioner, e.exchange, e.topic, e.key_fn_uid) == (
        Partitioner.HASH,
        ExchangeType.KAFKA,
        "t",
        "p/key0",
    )


def test_partitioning_returns_new_handles() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    s = env.from_kafka("a", name="a")
    s.rebalance()
    s.map(ident, name="m")  # still forward: rebalance() did not change s
    assert env.build().job_graph.vertices[0].vertex_id == "a"
    assert [o.uid for o in env.build().job_graph.vertices[0].operators] == ["a", "m"]


def test_forward_with_unequal_parallelism() -> None:
    env = StreamEnvironment("j")
    env.from_kafka("x", parallelism=2).forward().map(ident, parallelism=3)
    assert message(env.build) == (
        "forward edge kafka_source-0 -> map-0 needs equal parallelism, got 2 and 3; "
        "use rebalance() or set_parallelism()"
    )


def test_parallelism_above_max() -> None:
    env = StreamEnvironment("j", max_parallelism=8)
    env.from_kafka("x", parallelism=9)
    assert message(env.build) == "vertex 'kafka_source-0': parallelism 9 exceeds max_parallelism 8"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda env: env.build(), "job 'j' has no operators; start with env.from_kafka(...)"),
        (
            lambda env: env.from_kafka("x", start="newest"),
            "bad start 'newest': use 'earliest', 'latest', 'committed' or epoch ms >= 0",
        ),
        (
            lambda env: env.from_kafka("x", start=-1),
            "bad start -1: use 'earliest', 'latest', 'committed' or epoch ms >= 0",
        ),
        (
            lambda env: env.from_kafka("x", dead_letter_topic="d"),
            "dead_letter_topic is only used with on_decode_error='dead_letter'",
        ),
        (
            lambda env: env.from_kafka("x", on_decode_error="ignore"),
            "bad on_decode_error 'ignore': use one of fail, skip, dead_letter",
        ),
        (
            lambda env: env.from_kafka("x", max_out_of_orderness_ms=-1),
            "max_out_of_orderness_ms must be an int >= 0, got -1",
        ),
        (lambda env: env.from_kafka(""), "source topic must be a non-empty string, got ''"),
        (
            lambda env: env.from_kafka("x", parallelism=0),
            "parallelism must be an int >= 1, got 0",
        ),
        (
            lambda env: env.from_kafka("x").set_parallelism(0),
            "parallelism must be an int >= 1, got 0",
        ),
        (
            lambda env: env.from_kafka("x").rebalance().broadcast(),
            "the stream is already partitioned by rebalance; cannot also use broadcast",
        ),
        (
            lambda env: env.from_kafka("x").rebalance().key_by(key_a),
            "the stream is already partitioned by rebalance; cannot also use hash",
        ),
        (
            lambda env: env.from_kafka("x").exchange("kafka"),
            "a kafka exchange needs a topic: exchange('kafka', topic='...')",
        ),
        (
            lambda env: env.from_kafka("x").exchange("pipelined", topic="t"),
            "a pipelined exchange takes no topic",
        ),
        (
            lambda env: env.from_kafka("x").exchange("disk"),
            "unknown exchange 'disk': use 'pipelined' or 'kafka'",
        ),
        (
            lambda env: (
                env.from_kafka("x").exchange("kafka", topic="a").exchange("kafka", topic="b")
            ),
            "the stream already goes through kafka topic 'a'",
        ),
        (
            lambda env: env.from_kafka("x").to_kafka("y", delivery="twice"),
            "unknown delivery 'twice': use one of at_least_once, exactly_once",
        ),
        (
            lambda env: env.from_kafka("x").key_by(key_a).interval_join(lower_ms=0, upper_ms=1),
            "an interval join needs at least two keyed streams",
        ),
        (
            lambda env: (
                env.from_kafka("x")
                .key_by(key_a)
                .join(env.from_kafka("y").key_by(key_a), lower_ms=5, upper_ms=1)
            ),
            "interval join needs lower_ms <= upper_ms, got 5 > 1",
        ),
        (
            lambda env: env.connect(env.from_kafka("x")),
            "connect takes keyed streams (use .key_by first), got DataStream",
        ),
        (lambda env: env.connect(), "connect needs at least one keyed stream"),
    ],
)
def test_argument_errors(call: Callable[[StreamEnvironment], object], expected: str) -> None:
    env = StreamEnvironment("j")
    assert message(lambda: call(env)) == expected


def test_streams_of_different_environments_cannot_connect() -> None:
    a = StreamEnvironment("a").from_kafka("x").key_by(key_a)
    other = StreamEnvironment("b")
    b = other.from_kafka("y").key_by(key_a)
    assert message(lambda: a.connect(b)) == "cannot connect streams of different StreamEnvironments"
    assert message(lambda: other.connect(a, b)) == (
        "cannot connect streams of another StreamEnvironment"
    )


def test_non_callables_are_type_errors() -> None:
    s = StreamEnvironment("j").from_kafka("x")
    with pytest.raises(TypeError, match=r"^map expects a callable, got int$"):
        s.map(1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^key_by expects a callable, got str$"):
        s.key_by("id")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^key_fn must be callable, got str$"):
        s.to_kafka("y", key_fn="id")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"job_name": ""}, "job name must be a non-empty string, got ''"),
        (
            {"job_name": "j", "default_parallelism": 5, "max_parallelism": 4},
            "default_parallelism must be between 1 and max_parallelism=4, got 5",
        ),
        ({"job_name": "j", "max_parallelism": 0}, "max_parallelism must be an int >= 1, got 0"),
    ],
)
def test_environment_arguments(kwargs: dict[str, Any], expected: str) -> None:
    assert message(lambda: StreamEnvironment(**kwargs)) == expected
