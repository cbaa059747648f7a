"""JobGraph: validation (one-line GraphErrors), lookups, exact JSON round trip."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.api import StreamEnvironment
from streamer.errors import StreamerError
from streamer.graph import (
    ExchangeType,
    GraphError,
    JobEdge,
    JobGraph,
    JobVertex,
    OperatorKind,
    OperatorSpec,
    Partitioner,
)

FWD, HASH, REB, BCAST = (
    Partitioner.FORWARD,
    Partitioner.HASH,
    Partitioner.REBALANCE,
    Partitioner.BROADCAST,
)


def src(vid: str, p: int = 1, m: int = 128) -> JobVertex:
    op = OperatorSpec(vid, vid, OperatorKind.KAFKA_SOURCE, {"topic": vid})
    return JobVertex(vid, vid, (op,), p, m)


def op(vid: str, p: int = 1, kind: OperatorKind = OperatorKind.MAP, **config: Any) -> JobVertex:
    return JobVertex(vid, vid, (OperatorSpec(vid, vid, kind, config),), p)


def edge(a: str, b: str, part: Partitioner = FWD, i: int = 0, **kw: Any) -> JobEdge:
    if part == HASH and "key_fn_uid" not in kw:
        kw["key_fn_uid"] = f"{b}/key{i}"
    return JobEdge(a, b, part, input_index=i, **kw)


def error(vertices: list[JobVertex], edges: list[JobEdge]) -> str:
    with pytest.raises(GraphError) as info:
        JobGraph("job", tuple(vertices), tuple(edges))
    message = str(info.value)
    assert "\n" not in message
    return message


def join_job() -> JobGraph:
    env = StreamEnvironment("joins", default_parallelism=2, max_parallelism=64)
    orders = env.from_kafka("orders", name="orders", start=1_700_000_000_000).key_by(
        lambda o: o["id"]
    )
    pays = env.from_kafka("payments", parallelism=3, on_decode_error="skip").key_by(
        lambda p: p["order_id"]
    )
    ships = (
        env.from_kafka("shipments", parallelism=1, max_out_of_orderness_ms=500)
        .exchange("kafka", topic="ships-internal")
        .key_by(lambda s: (s["order_id"], s["region"]))
    )
    joined = orders.interval_join(pays, ships, lower_ms=-1000, upper_ms=5000, name="match")
    joined.set_parallelism(4).map(lambda r: r, name="shape").to_kafka(
        "matched", delivery="exactly_once"
    )
    return env.build().job_graph


def test_json_round_trip_is_exact_for_a_multi_input_join() -> None:
    jg = join_job()
    again = JobGraph.from_json(jg.to_json())
    assert again == jg
    assert again.to_json() == jg.to_json()
    assert JobGraph.from_json(jg.to_json().decode()) == jg
    match = again.vertex("match")
    assert match.head.kind is OperatorKind.JOIN
    assert match.head.config == {
        "inputs": 3,
        "lower_ms": -1000,
        "upper_ms": 5000,
        "has_fn": False,
        "late_topic": None,
    }
    assert [(e.source_vertex, e.input_index, e.exchange) for e in again.inputs_of("match")] == [
        ("orders", 0, ExchangeType.PIPELINED),
        ("kafka_source-1", 1, ExchangeType.PIPELINED),
        ("kafka_source-2", 2, ExchangeType.KAFKA),
    ]
    assert again.inputs_of("match")[2].topic == "ships-internal"
    assert isinstance(again.edges[0].partitioner, Partitioner)


def test_json_is_deterministic_plain_data() -> None:
    jg = join_job()
    data = orjson.loads(jg.to_json())
    assert data["version"] == 1
    assert data["job_name"] == "joins"
    assert [v["vertex_id"] for v in data["vertices"]] == [
        "orders",
        "kafka_source-1",
        "kafka_source-2",
        "match",
    ]
    # shape and the sink inherit match's parallelism 4 and chain into it
    assert [o["uid"] for o in data["vertices"][3]["operators"]] == [
        "match",
        "shape",
        "kafka_sink-0",
    ]
    assert data["vertices"][3]["parallelism"] == 4
    assert len(data["edges"]) == 3
    assert data["edges"][0] == {
        "source_vertex": "orders",
        "target_vertex": "match",
        "partitioner": "hash",
        "exchange": "pipelined",
        "input_index": 0,
        "key_fn_uid": "match/key0",
        "topic": None,
    }


def test_json_round_trip_in_another_process() -> None:
    jg = join_job()
    script = (
        "import sys; from streamer.graph import JobGraph; "
        "sys.stdout.buffer.write(JobGraph.from_json(sys.stdin.buffer.read()).to_json())"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=jg.to_json(),
        capture_output=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert JobGraph.from_json(out.stdout) == jg


def test_config_is_normalized_to_json_data() -> None:
    spec = OperatorSpec("a", "a", OperatorKind.MAP, {"pair": (1, 2), "nested": {"t": ("x",)}})
    assert spec.config == {"pair": [1, 2], "nested": {"t": ["x"]}}
    with pytest.raises(GraphError, match="operator 'b': config is not JSON-able"):
        OperatorSpec("b", "b", OperatorKind.MAP, {"fn": object()})


def test_kind_accepts_its_string_value() -> None:
    spec = OperatorSpec("a", "a", "map", {})  # type: ignore[arg-type]
    assert spec.kind is OperatorKind.MAP
    assert hash(spec) == hash(OperatorSpec("a", "a", OperatorKind.MAP))


def test_lookups_and_topological_order() -> None:
    jg = JobGraph(
        "job",
        (
            op("sink", 2, OperatorKind.KAFKA_SINK),
            op("j", 2, OperatorKind.JOIN, inputs=2),
            src("s", 2),
            src("t", 2),
        ),
        (edge("j", "sink"), edge("t", "j", HASH, 1), edge("s", "j", HASH, 0)),
    )
    assert jg.topological_order() == ("s", "t", "j", "sink")
    assert jg.sources() == ("s", "t")
    assert jg.sinks() == ("sink",)
    assert [e.source_vertex for e in jg.inputs_of("j")] == ["s", "t"]
    assert jg.outputs_of("j") == (edge("j", "sink"),)
    assert jg.outputs_of("sink") == ()
    assert jg.operator("j").kind is OperatorKind.JOIN
    assert edge("s", "j", HASH, 0).edge_id == "s->j/0"
    with pytest.raises(GraphError, match=r"^unknown vertex 'nope' in job 'job'$"):
        jg.vertex("nope")
    with pytest.raises(GraphError, match=r"^unknown operator 'nope' in job 'job'$"):
        jg.operator("nope")


def test_graph_error_is_a_streamer_error_and_a_value_error() -> None:
    assert issubclass(GraphError, StreamerError)
    assert issubclass(GraphError, ValueError)
    assert str(GraphError("a\n  b")) == "a b"


def test_forward_edge_with_unequal_parallelism() -> None:
    assert error([src("a", 2), op("b", 3)], [edge("a", "b")]) == (
        "forward edge a -> b needs equal parallelism, got 2 and 3; "
        "use rebalance() or set_parallelism()"
    )


def test_cycle() -> None:
    vertices = [src("s"), op("a"), op("b", kind=OperatorKind.PROCESS, inputs=2)]
    edges = [edge("s", "b", HASH, 0), edge("b", "a"), edge("a", "b", HASH, 1)]
    assert error(vertices, edges) == "job graph has a cycle; vertices left unordered: a, b"


def test_unknown_vertex() -> None:
    assert error([src("a")], [edge("a", "zz")]) == "edge a -> zz: unknown vertex 'zz'"


@pytest.mark.parametrize(
    ("vertex", "message"),
    [
        (src("a", 0), "vertex 'a': parallelism must be >= 1, got 0"),
        (src("a", -1), "vertex 'a': parallelism must be >= 1, got -1"),
        (src("a", 129), "vertex 'a': parallelism 129 exceeds max_parallelism 128"),
        (src("a", 5, 4), "vertex 'a': parallelism 5 exceeds max_parallelism 4"),
        (src("a", 1, 0), "vertex 'a': max_parallelism must be >= 1, got 0"),
        (JobVertex("a", "a", (), 1), "vertex 'a' has no operators"),
    ],
)
def test_bad_vertex(vertex: JobVertex, message: str) -> None:
    assert error([vertex], []) == message


@pytest.mark.parametrize(
    ("vertices", "edges", "message"),
    [
        ([], [], "job 'job' has no vertices"),
        ([src("a"), src("a")], [], "duplicate vertex id 'a'"),
        ([src("a"), op("b")], [], "vertex 'b': its map head expects 1 input(s), has 0"),
        (
            [src("a"), op("b")],
            [edge("a", "b", HASH, key_fn_uid=None)],
            "hash edge a -> b has no key function",
        ),
        (
            [src("a"), op("b")],
            [edge("a", "b", exchange=ExchangeType.KAFKA)],
            "kafka exchange edge a -> b has no topic",
        ),
        (
            [src("a"), op("b")],
            [edge("a", "b", topic="t")],
            "pipelined edge a -> b must not name a topic",
        ),
        (
            [src("a"), op("b", kind=OperatorKind.JOIN, inputs=2)],
            [edge("a", "b", HASH, 0), edge("a", "b", HASH, 2)],
            "vertex 'b': input indices must be 0..1, got [0, 2]",
        ),
        (
            [src("a"), op("b", kind=OperatorKind.JOIN, inputs=2)],
            [edge("a", "b", HASH, 0)],
            "vertex 'b': its join head expects 2 input(s), has 1",
        ),
        (
            [src("a"), JobVertex("x", "x", (OperatorSpec("a2", "a2", OperatorKind.MAP),), 1)],
            [],
            "vertex 'x': its id must be its head operator's uid 'a2'",
        ),
        (
            [src("a"), op("b", kind=OperatorKind.PROCESS, inputs=1)],
            [edge("a", "b", REB)],
            "vertex 'b': input 0 of a keyed process must be a hash edge (key_by), got rebalance",
        ),
        (
            [src("a"), op("s", kind=OperatorKind.KAFKA_SINK), op("b")],
            [edge("a", "s"), edge("s", "b")],
            "edge s -> b: vertex 's' ends in a sink and has no output",
        ),
        (
            [src("a"), src("b")],
            [edge("a", "b")],
            "vertex 'b': its kafka_source head expects 0 input(s), has 1",
        ),
    ],
)
def test_bad_graph(vertices: list[JobVertex], edges: list[JobEdge], message: str) -> None:
    assert error(vertices, edges) == message


def test_bad_chains() -> None:
    m = OperatorSpec("m", "m", OperatorKind.MAP)
    s = OperatorSpec("s", "s", OperatorKind.KAFKA_SOURCE)
    k = OperatorSpec("k", "k", OperatorKind.KAFKA_SINK)
    assert error([JobVertex("s", "s", (s, s), 1)], []) == "duplicate operator uid 's'"
    assert error([JobVertex("s", "s", (s, k, m), 1)], []) == (
        "vertex 's': a kafka_sink ('k') must end its chain"
    )
    assert error(
        [JobVertex("s", "s", (s, OperatorSpec("x", "x", OperatorKind.KAFKA_SOURCE)), 1)], []
    ) == ("vertex 's': a kafka_source operator ('x') must head its vertex")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "job graph is not valid JSON"),
        (b"[]", "malformed job graph: expected a JSON object"),
        (b'{"version": 99}', "unsupported job graph version 99"),
        (b'{"version": 1, "job_name": "x"}', "malformed job graph: 'vertices'"),
        (
            b'{"version": 1, "job_name": "x", "vertices": [{"vertex_id": 3}], "edges": []}',
            "malformed job graph: 'vertex_id' must be str, got int",
        ),
    ],
)
def test_from_json_rejects_malformed_input(data: bytes, message: str) -> None:
    with pytest.raises(GraphError) as info:
        JobGraph.from_json(data)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_from_json_validates() -> None:
    data = orjson.loads(join_job().to_json())
    data["vertices"][3]["parallelism"] = 100
    with pytest.raises(
        GraphError, match=r"^vertex 'match': parallelism 100 exceeds max_parallelism 64$"
    ):
        JobGraph.from_json(orjson.dumps(data))


def test_bad_partitioner_name() -> None:
    with pytest.raises(GraphError, match="'shuffle' is not a valid Partitioner"):
        JobEdge("a", "b", "shuffle")  # type: ignore[arg-type]
    assert JobEdge("a", "b", "broadcast").partitioner is BCAST  # type: ignore[arg-type]


def test_graph_and_api_import_no_runtime_modules() -> None:
    script = (
        "import sys, streamer.graph, streamer.api; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in {'confluent_kafka', 'asyncio', 'netlayer', 'rocksdict'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("kind", "config", "expected"),
    [
        (OperatorKind.JOIN, {"inputs": 1}, "a join needs config 'inputs' >= 2, got 1"),
        (OperatorKind.JOIN, {}, "a join needs config 'inputs' >= 2, got None"),
        (OperatorKind.PROCESS, {"inputs": 0}, "a process needs config 'inputs' >= 1, got 0"),
        (OperatorKind.PROCESS, {"inputs": True}, "a process needs config 'inputs' >= 1, got True"),
    ],
)
def test_keyed_operators_declare_their_inputs(
    kind: OperatorKind, config: dict[str, Any], expected: str
) -> None:
    with pytest.raises(GraphError) as info:
        OperatorSpec("x", "x", kind, config)
    assert str(info.value) == f"operator 'x': {expected}"
