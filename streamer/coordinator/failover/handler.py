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

Retention past its bounds (a producer's memory and spill bounds, ``retention_bytes``
and ``retention_spill_bytes``) makes that producer refuse the replay with
``retention overflowed``; the job setting ``retention_overflow`` chooses what then:
``region`` (the default: restart the task's region, exact, ``fallback_reason``
says why) or ``lossy`` (redeploy the task alone without a replay, ByteDance's
lossy protocol: what was routed to it since the checkpoint is lost and counted in
``records_dropped``; ``lossy_reason`` says why). ``replay_refused`` decides it for
the failover whose new attempt was refused; ``plan`` for a failure whose cause says
so (a replay that overflowed after the failover ended).

Threading: the coordinator's loop only (the backoff counts failures).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from netlayer.partition.retention import GAP_OVERFLOW
from streamer.connectors.health import UNREACHABLE
from streamer.coordinator.failover.backoff import RestartBackoff
from streamer.coordinator.failover.strategies import RestartIndividual, make_strategy
from streamer.graph import ExecutionGraph, TaskId

# what a producer answers a replay request it cannot serve (netlayer's error text)
REPLAY_FAILED = "cannot replay from checkpoint"
OVERFLOW_CHOICES = ("region", "lossy")  # the job setting retention_overflow


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
    lossy_reason: str | None = None  # INDIVIDUAL, not lossless, in a lossless job: why


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
        self.on_overflow = config.get("retention_overflow", "region")
        if self.on_overflow not in OVERFLOW_CHOICES:
            raise ValueError(f"retention_overflow={self.on_overflow!r}: use region or lossy")
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
        if REPLAY_FAILED in cause:
            return self.replay_refused(failed, cause, decision.delay_s)
        why = self._cannot_replay(failed, cause, last_checkpoint)
        if why is not None:
            region = self.strategy.fallback(failed)
            return FailoverPlan(Recovery.RESTART, region, decision.delay_s, fallback_reason=why)
        return FailoverPlan(Recovery.INDIVIDUAL, tasks, decision.delay_s, lossless=True)

    def replay_refused(self, failed: TaskId, cause: str, delay_s: float = 0.0) -> FailoverPlan:
        """A producer could not replay to ``failed``'s new attempt (``cause`` has its
        text): restart the region, or, past retention's bounds with
        ``retention_overflow=lossy``, recover ``failed`` alone and lossy."""
        assert isinstance(self.strategy, RestartIndividual)
        if GAP_OVERFLOW in cause and self.on_overflow == "lossy":
            why = (
                f"replay failed ({cause}): retention_overflow=lossy recovers {failed} alone "
                "without a replay; what was routed to it since the checkpoint is lost"
            )
            return FailoverPlan(Recovery.INDIVIDUAL, frozenset({failed}), delay_s, lossy_reason=why)
        setting = " (retention_overflow=region)" if GAP_OVERFLOW in cause else ""
        why = f"replay failed ({cause}): lossless recovery restarts the region{setting}"
        region = self.strategy.fallback(failed)
        return FailoverPlan(Recovery.RESTART, region, delay_s, fallback_reason=why)

    def _cannot_replay(self, failed: TaskId, cause: str, last_checkpoint: int) -> str | None:
        """Why lossless single-task recovery cannot restore ``failed`` exactly, or None."""
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
