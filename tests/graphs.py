"""Job graphs several unit tests share (built with the public API, never run)."""

from __future__ import annotations

from typing import Any

from streamer.api import StreamEnvironment
from streamer.graph import ExecutionGraph, JobGraph


def ident(x: Any) -> Any:
    return x


def keyed_job_graph(
    name: str = "keyed", *, middle: str = "mid", kafka_exchange: str | None = None
) -> JobGraph:
    """src(2) -hash-> ``middle``(4) -rebalance-> sink(2): all-to-all, one region.

    With ``kafka_exchange`` (its topic): src(2) -hash-> tag(3) =kafka, hash=>
    ``middle``(4) -rebalance-> sink(2).
    """
    env = StreamEnvironment(name, default_parallelism=2)
    stream: Any = env.from_kafka("in", name="src").key_by(ident)
    if kafka_exchange is not None:
        stream = stream.process(ident, name="tag", parallelism=3)
        stream = stream.exchange("kafka", topic=kafka_exchange).key_by(ident)
    stream = stream.process(ident, name=middle, parallelism=4).rebalance()
    stream.to_kafka("out", name="sink", parallelism=2)
    return env.build().job_graph


def keyed_job() -> ExecutionGraph:
    """The execution graph of `keyed_job_graph`: 8 tasks, one region."""
    return ExecutionGraph.from_job_graph(keyed_job_graph())
