"""``FailoverHandler``: turns a task failure into a ``FailoverPlan`` value (Flink's
``ExecutionFailureHandler`` and ``FailureHandlingResult``).

The plan says what to do, never does it: which tasks, after which delay, by which
protocol (``INDIVIDUAL``: the single-task recovery protocol; ``RESTART``: cancel
the set and redeploy it restored from the last checkpoint), or that the failure
is ``UNRECOVERABLE`` (a restart limit was reached; ``reason`` says which). The
``JobMaster`` carries plans out.

A failure whose cause says the task cannot reach Kafka (``UNREACHABLE``: at its
start, or as it failed, see ``coordinator.diagnostics``) is ``UNRECOVERABLE`` at
once: a new attempt would wait for the same broker, and a job flapping through
failovers that cannot help hides the reason.

Lossless single-task recovery (``individual_recovery=lossless``, DESIGN.md §9):
the new attempt restores the last completed checkpoint, its producers replay
what they retained since that checkpoint's barrier (a source re-reads Kafka from
its offsets), it re-executes in the order its determinants record (collected
from its consumers), and its consumers drop what they already had. A sink needs
no determinants (its open transaction is fenced and rewritten from the replay).
A source with processing-time idleness (``idle_timeout_ms``), a failure without
a completed checkpoint to replay from, and a failed replay restart the task's
pipelined region instead: the plan says so in ``fallback_reason``, and nothing
is lost.

Threading: the coordinator's loop only (the backoff counts failures).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from streamer.connectors.health import UNREACHABLE
from streamer.coordinator.failover.backoff import RestartBackoff
from streamer.coordinator.failover.strategies import RestartIndividual, make_strategy
from streamer.graph import ExecutionGraph, TaskId

# what a producer answers a replay request it cannot serve (netlayer's error text)
REPLAY_FAILED = "cannot replay from checkpoint"


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
    fallback_reason: str | None = None  # RESTART instead of INDIVIDUAL: why
    lossless: bool = False  # INDIVIDUAL: producers replay from the restored checkpoint


class FailoverHandler:
    """The job's strategy and restart backoff; ``plan`` is called once per failure."""

    def __init__(self, eg: ExecutionGraph, config: dict[str, Any]) -> None:
        self.eg = eg
        # lossless needs checkpoints to replay from: without them, ByteDance's lossy mode
        self.lossless = (
            config.get("individual_recovery", "lossless") == "lossless"
            and config.get("checkpoint_interval") is not None
        )
        self.idle_timeout = config.get("idle_timeout_ms") is not None
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

    def plan(
        self, failed: TaskId, cause: str, now: float, last_checkpoint: int = 0
    ) -> FailoverPlan:
        """What to do about ``failed`` failing at monotonic time ``now``;
        ``last_checkpoint`` is the latest completed checkpoint (0: none)."""
        if UNREACHABLE in cause:
            reason = (
                f"{failed} failed: {cause} (not restarted: a new attempt cannot reach it either)"
            )
            return FailoverPlan(Recovery.UNRECOVERABLE, frozenset(), reason=reason)
        decision = self.backoff.decide(failed, now)
        if not decision.restart:
            return FailoverPlan(
                Recovery.UNRECOVERABLE,
                frozenset(),
                reason=f"{decision.reason}; last failure: {cause}",
            )
        tasks = self.strategy.tasks_to_restart(failed, cause)
        if not isinstance(self.strategy, RestartIndividual):
            return FailoverPlan(Recovery.RESTART, tasks, decision.delay_s)
        if not self.lossless:
            return FailoverPlan(Recovery.INDIVIDUAL, tasks, decision.delay_s)
        why = self._cannot_replay(failed, cause, last_checkpoint)
        if why is not None:
            region = self.strategy.fallback(failed)
            return FailoverPlan(Recovery.RESTART, region, decision.delay_s, fallback_reason=why)
        return FailoverPlan(Recovery.INDIVIDUAL, tasks, decision.delay_s, lossless=True)

    def _cannot_replay(self, failed: TaskId, cause: str, last_checkpoint: int) -> str | None:
        """Why lossless single-task recovery cannot restore ``failed`` exactly, or None."""
        if REPLAY_FAILED in cause:
            return f"replay failed ({cause}): lossless recovery restarts the region"
        if last_checkpoint <= 0:
            return "no completed checkpoint to replay from: lossless recovery restarts the region"
        if self.idle_timeout and self.eg.vertex_of(failed).operators[0].kind == "kafka_source":
            return (
                "a source with idle_timeout_ms (processing-time idleness) cannot be "
                "re-executed exactly: restarting its region"
            )
        return None

    def fallback(self, failed: TaskId) -> FailoverPlan:
        """The individual protocol gave up on ``failed``: restart its pipelined region."""
        assert isinstance(self.strategy, RestartIndividual)
        return FailoverPlan(Recovery.RESTART, self.strategy.fallback(failed))
