"""ChannelDirectory: plan channel lists and who waits for which producer's address."""

from __future__ import annotations

from streamer.coordinator.directory import ChannelDirectory
from streamer.coordinator.execution import ExecutionStore
from streamer.graph import (
    ExecutionGraph,
    JobEdge,
    JobGraph,
    JobVertex,
    OperatorKind,
    OperatorSpec,
    Partitioner,
    TaskId,
)


def vertex(vid: str, p: int, kind: OperatorKind = OperatorKind.MAP) -> JobVertex:
    return JobVertex(vid, vid, (OperatorSpec(vid, vid, kind, {}),), p)


def setup() -> tuple[ChannelDirectory, ExecutionStore]:
    """a(2) -rebalance-> b(3) -forward-> c(3)."""
    jg = JobGraph(
        "job",
        (vertex("a", 2, OperatorKind.KAFKA_SOURCE), vertex("b", 3), vertex("c", 3)),
        (JobEdge("a", "b", Partitioner.REBALANCE), JobEdge("b", "c", Partitioner.FORWARD)),
    )
    eg = ExecutionGraph.from_job_graph(jg)
    tasks = ExecutionStore(eg)
    return tasks.directory, tasks


A0, A1, B0, B1, B2, C1 = (
    TaskId(v, i) for v, i in [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2), ("c", 1)]
)


def test_all_to_all_gates_wait_for_the_whole_source_vertex() -> None:
    d, tasks = setup()
    assert d.inputs(TaskId("a", 0)) == []  # a source has no inputs
    assert d.inputs(B0) is None and d.inputs(B2) is None  # both wait for vertex a
    assert tasks.set_address(A0, "h:1") == []
    assert d.inputs(B1) is None
    assert sorted(tasks.set_address(A1, "h:2")) == [B0, B1, B2]
    channels = [{"address": "h:1", "attempt": 0}, {"address": "h:2", "attempt": 0}]
    plans = [d.inputs(b) for b in (B0, B1, B2)]
    assert plans == [[channels]] * 3
    assert plans[0] is not None and plans[1] is not None
    assert plans[0][0] is plans[1][0]  # one list per vertex, shared by its consumers


def test_forward_gates_wait_for_their_one_producer() -> None:
    d, tasks = setup()
    assert d.inputs(C1) is None
    assert tasks.set_address(B0, "h:10") == []  # not c#1's producer
    assert tasks.set_address(B1, "h:11") == [C1]
    assert d.inputs(C1) == [[{"address": "h:11", "attempt": 0}]]


def test_a_restarted_producer_invalidates_the_shared_list() -> None:
    d, tasks = setup()
    tasks.set_address(A0, "h:1")
    tasks.set_address(A1, "h:2")
    assert d.inputs(B0) == [[{"address": "h:1", "attempt": 0}, {"address": "h:2", "attempt": 0}]]
    tasks.set_address(A1, None)  # a#1 failed
    tasks[A1].attempt += 1
    assert d.inputs(B0) is None  # b#0 restarted meanwhile: it waits for a#1's new attempt
    assert tasks.set_address(A1, "h:3") == [B0]
    assert d.inputs(B0) == [[{"address": "h:1", "attempt": 0}, {"address": "h:3", "attempt": 1}]]


def test_a_forgotten_task_is_not_released() -> None:
    d, tasks = setup()
    assert d.inputs(B0) is None
    d.forget(B0)  # b#0 failed while it waited
    tasks.set_address(A0, "h:1")
    assert tasks.set_address(A1, "h:2") == []
