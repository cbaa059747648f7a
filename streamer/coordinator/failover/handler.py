"""``FailoverHandler``: turns a task failure into a ``FailoverPlan`` value (Flink's
``ExecutionFailureHandler`` and ``FailureHandlingResult``).

The plan says what to do, never does it: which tasks, after which delay, by which
protocol (``INDIVIDUAL``: the single-task recovery protocol; ``RESTART``: cancel
the set and redeploy it restored from the last checkpoint), or that the failure
is ``UNRECOVERABLE`` (a restart limit was reached; ``reason`` says which). The
``JobMaster`` carries plans out.

Threading: the coordinator's loop only (the backoff counts failures).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from streamer.coordinator.failover.backoff import RestartBackoff
from streamer.coordinator.failover.strategies import RestartIndividual, make_strategy
from streamer.graph import ExecutionGraph, TaskId


class Recovery(StrEnum):
    INDIVIDUAL = "individual"
    RESTART = "restart"
    UNRECOVERABLE = "unrecoverable"


@dataclass(frozen=True)
class FailoverPlan:
    recovery: Recovery
    tasks: frozenset[TaskId]
    delay_s: float = 0.0
    reason: str | None = None  # UNRECOVERABLE: why the job fails


class FailoverHandler:
    """The job's strategy and restart backoff; ``plan`` is called once per failure."""

    def __init__(self, eg: ExecutionGraph, config: dict[str, Any]) -> None:
        self.strategy = make_strategy(config.get("strategy", "individual"), eg)
        self.backoff = RestartBackoff(
            max_failures_per_task=int(config.get("max_failures_per_task", 5)),
            max_total_failures=int(config.get("max_total_failures", 20)),
            delay_s=float(config.get("restart_delay", 0.0)),
            multiplier=float(config.get("restart_backoff_multiplier", 1.0)),
            failure_window_s=config.get("failure_window"),
        )

    @property
    def strategy_name(self) -> str:
        return self.strategy.name

    def plan(self, failed: TaskId, cause: str, now: float) -> FailoverPlan:
        """What to do about ``failed`` failing at monotonic time ``now``."""
        decision = self.backoff.decide(failed, now)
        if not decision.restart:
            return FailoverPlan(
                Recovery.UNRECOVERABLE,
                frozenset(),
                reason=f"{decision.reason}; last failure: {cause}",
            )
        tasks = self.strategy.tasks_to_restart(failed, cause)
        recovery = (
            Recovery.INDIVIDUAL
            if isinstance(self.strategy, RestartIndividual)
            else Recovery.RESTART
        )
        return FailoverPlan(recovery, tasks, decision.delay_s)

    def fallback(self, failed: TaskId) -> FailoverPlan:
        """The individual protocol gave up on ``failed``: restart its pipelined region."""
        assert isinstance(self.strategy, RestartIndividual)
        return FailoverPlan(Recovery.RESTART, self.strategy.fallback(failed))
