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

`job` (exported as ``streamer.job``) marks a function as a job builder: a job
reference may name only a `Job`, a `StreamEnvironment` or such a function (see
`streamer.api.loader`), so a reference can never call arbitrary code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FunctionType, MappingProxyType
from typing import Any, TypeVar

from streamer.graph import ExecutionGraph, GraphError, JobEdge, JobGraph, OperatorSpec

__all__ = ["Job", "is_job_function", "job", "takes_params"]

_F = TypeVar("_F", bound=Callable[..., Any])
_MARK = "__streamer_job__"


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


def takes_params(fn: Callable[..., Any]) -> bool:
    """Whether a job function gets the job's params: it has one required positional
    parameter (otherwise it is called with no argument)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 1


def job(fn: _F) -> _F:
    """Mark ``fn`` as a job function, so a job reference (``"pkg.module:fn"``) may name it.

    ``fn`` builds the job and returns a `StreamEnvironment` or a `Job`; it takes no
    argument, or one: the job's params (``--param key=value``). It is returned
    unchanged (still callable as before)::

        import streamer

        @streamer.job
        def orders(params):
            env = StreamEnvironment("orders")
            ...
            return env

    Raises `TypeError` for anything but a plain synchronous function taking at
    most one required argument.
    """
    if type(fn) is not FunctionType:
        raise TypeError(f"@streamer.job marks a function, got {type(fn).__name__}")
    if inspect.iscoroutinefunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError(f"@streamer.job: {fn.__qualname__} must be a plain function")
    params = inspect.signature(fn).parameters.values()
    required = [
        p
        for p in params
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if len(required) > 1 or any(p.kind is p.KEYWORD_ONLY for p in required):
        raise TypeError(
            f"@streamer.job: {fn.__qualname__} must take no argument or one (the job params)"
        )
    fn.__dict__[_MARK] = True
    return fn


def is_job_function(obj: object) -> bool:
    """Whether ``obj`` is a function marked with `job` (its own mark, looked up without
    running any code of ``obj``)."""
    return type(obj) is FunctionType and obj.__dict__.get(_MARK) is True
