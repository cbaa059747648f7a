"""Job graphs as pure data: JobGraph, chaining, ExecutionGraph, regions, key groups.

Nothing here imports runtime code (Kafka clients, asyncio, netlayer); every
function is pure and every type is immutable plain data.
"""

from streamer.graph.chaining import StreamEdge, StreamNode, chain, is_chainable
from streamer.graph.execution import ExecutionGraph, InputGate, ResultPartition, TaskId
from streamer.graph.jobgraph import (
    ExchangeType,
    GraphError,
    JobEdge,
    JobGraph,
    JobVertex,
    OperatorKind,
    OperatorSpec,
    Partitioner,
)
from streamer.graph.keygroups import (
    DEFAULT_MAX_PARALLELISM,
    key_group_for_key,
    key_group_range,
    key_to_bytes,
    subtask_for_key,
    subtask_for_key_group,
)
from streamer.graph.regions import pipelined_regions, region_of, regions_by_task

__all__ = [
    "DEFAULT_MAX_PARALLELISM",
    "ExchangeType",
    "ExecutionGraph",
    "GraphError",
    "InputGate",
    "JobEdge",
    "JobGraph",
    "JobVertex",
    "OperatorKind",
    "OperatorSpec",
    "Partitioner",
    "ResultPartition",
    "StreamEdge",
    "StreamNode",
    "TaskId",
    "chain",
    "is_chainable",
    "key_group_for_key",
    "key_group_range",
    "key_to_bytes",
    "pipelined_regions",
    "region_of",
    "regions_by_task",
    "subtask_for_key",
    "subtask_for_key_group",
]
