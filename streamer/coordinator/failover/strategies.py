"""Failover decisions: which tasks to restart when one fails. Pure, no I/O.

Flink's split of decisions and actions: a ``FailoverStrategy`` only answers
``tasks_to_restart(failed, cause)``; the coordinator carries it out (cancel,
restore, redeploy, or for ``individual`` the single-task recovery protocol).

- ``RestartAll`` (``full``): every task of the job.
- ``RestartPipelinedRegion`` (``region``): the failed task's pipelined region
  (FLIP-1), i.e. its connected component over pipelined exchanges; a ``kafka``
  exchange cuts regions.
- ``RestartIndividual`` (``individual``): only the failed task (ByteDance's
  single-task recovery). Its fallback when channel updates time out is a region
  restart, which the coordinator asks ``fallback()`` for.
"""

from __future__ import annotations

from typing import Protocol

from streamer.errors import ConfigError
from streamer.graph import ExecutionGraph, TaskId, regions_by_task

STRATEGIES = ("full", "region", "individual")


class FailoverStrategy(Protocol):
    """Decides the set of tasks to restart; never touches processes."""

    name: str

    def tasks_to_restart(self, failed: TaskId, cause: str | None = None) -> frozenset[TaskId]: ...


class RestartAll:
    name = "full"

    def __init__(self, eg: ExecutionGraph) -> None:
        self._all = frozenset(eg.tasks)

    def tasks_to_restart(self, failed: TaskId, cause: str | None = None) -> frozenset[TaskId]:
        return self._all


class RestartPipelinedRegion:
    name = "region"

    def __init__(self, eg: ExecutionGraph) -> None:
        self._regions = dict(regions_by_task(eg))

    def tasks_to_restart(self, failed: TaskId, cause: str | None = None) -> frozenset[TaskId]:
        return self._regions[failed]


class RestartIndividual:
    name = "individual"

    def __init__(self, eg: ExecutionGraph) -> None:
        self._tasks = frozenset(eg.tasks)
        self._fallback = RestartPipelinedRegion(eg)

    def tasks_to_restart(self, failed: TaskId, cause: str | None = None) -> frozenset[TaskId]:
        if failed not in self._tasks:
            raise KeyError(failed)
        return frozenset({failed})

    def fallback(self, failed: TaskId) -> frozenset[TaskId]:
        """What to restart when the individual protocol times out: the failed task's region."""
        return self._fallback.tasks_to_restart(failed)


def make_strategy(
    name: str, eg: ExecutionGraph
) -> RestartAll | RestartPipelinedRegion | RestartIndividual:
    """The strategy called ``name`` (``full``, ``region`` or ``individual``) for ``eg``."""
    if name == "full":
        return RestartAll(eg)
    if name == "region":
        return RestartPipelinedRegion(eg)
    if name == "individual":
        return RestartIndividual(eg)
    raise ConfigError(f"unknown failover strategy {name!r}: use one of {', '.join(STRATEGIES)}")
