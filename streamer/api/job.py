"""`Job`: a built job, i.e. its `JobGraph` plus the user callables it refers to.

The graph is plain data (it may be sent as JSON); the callables never travel:
every process gets them by importing the job module and re-running its
builder (see `streamer.api.loader.load_job`). Callables are looked up by uid:

- an operator's main callable (map/filter/flat_map function, process function
  or class, join function): ``functions[op.uid]`` (absent for sources, sinks
  and joins without a function);
- a hash edge's key function: ``functions[edge.key_fn_uid]``;
- a source's timestamp assigner: ``functions[op.config["timestamp_assigner"]]``
  when that config value is not ``None``;
- a sink's key function: ``functions[op.config["key_fn"]]`` when not ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from streamer.graph import ExecutionGraph, GraphError, JobEdge, JobGraph, OperatorSpec

__all__ = ["Job"]


@dataclass(frozen=True, eq=False)
class Job:
    """A validated, chained `JobGraph` and its callables keyed by uid (read-only)."""

    job_graph: JobGraph
    functions: Mapping[str, Callable[..., Any]]

    def __post_init__(self) -> None:
        object.__setattr__(self, "functions", MappingProxyType(dict(self.functions)))

    @property
    def name(self) -> str:
        """The job's name."""
        return self.job_graph.job_name

    def function(self, uid: str) -> Callable[..., Any]:
        """The callable registered under ``uid``; `GraphError` if there is none."""
        try:
            return self.functions[uid]
        except KeyError:
            raise GraphError(f"job '{self.name}' has no function '{uid}'") from None

    def operator_function(self, op: OperatorSpec) -> Callable[..., Any] | None:
        """The operator's main callable, or ``None`` if it has none (sources, sinks)."""
        return self.functions.get(op.uid)

    def key_function(self, edge: JobEdge) -> Callable[[Any], Any] | None:
        """The key function of a hash edge, or ``None`` for other edges."""
        return None if edge.key_fn_uid is None else self.function(edge.key_fn_uid)

    def execution_graph(self) -> ExecutionGraph:
        """The job's `ExecutionGraph` (computed on each call)."""
        return ExecutionGraph.from_job_graph(self.job_graph)

    def check_graph(self, submitted: JobGraph) -> None:
        """Raise `GraphError` unless ``submitted`` equals this job's graph.

        A process that re-ran the builder calls this with the graph the
        coordinator sent, to catch job code that differs between processes.
        """
        if submitted != self.job_graph:
            raise GraphError(
                f"job '{self.name}': the local job code builds a different graph than the "
                "submitted one; deploy the same job code everywhere"
            )
