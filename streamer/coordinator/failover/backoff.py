"""``RestartBackoff``: whether and when to restart after a failure (FLIP-1's two limits).

- ``max_failures_per_task``: how often one task may fail before the job fails;
- ``max_total_failures``: how many task failures the whole job may have;
- both counted inside ``failure_window_s`` (``None``: the job's whole life);
- delay: fixed (``delay_s``) or exponential per task (``delay_s * multiplier**(n-1)``,
  capped at ``max_delay_s``), where ``n`` is that task's failures in the window.

Not thread-safe; the coordinator's loop owns it. ``decide`` takes the current
time as an argument so the logic stays deterministic and testable.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass, field

from streamer.errors import ConfigError
from streamer.graph import TaskId


@dataclass(frozen=True)
class RestartDecision:
    restart: bool
    delay_s: float
    reason: str | None = None  # why the job must fail, when restart is False


@dataclass
class RestartBackoff:
    max_failures_per_task: int = 5
    max_total_failures: int = 20
    delay_s: float = 0.0
    multiplier: float = 1.0  # 1.0: fixed delay; > 1: exponential
    max_delay_s: float = 30.0
    failure_window_s: float | None = None
    _per_task: dict[TaskId, deque[float]] = field(default_factory=lambda: defaultdict(deque))
    _total: deque[float] = field(default_factory=deque)

    def __post_init__(self) -> None:
        if self.max_failures_per_task < 0 or self.max_total_failures < 0:
            raise ConfigError("failure limits must be >= 0")
        if self.delay_s < 0 or self.multiplier < 1.0:
            raise ConfigError("restart delay must be >= 0 and its multiplier >= 1")

    def decide(self, failed: TaskId, now: float) -> RestartDecision:
        """Record a failure of ``failed`` at ``now`` and say whether/when to restart."""
        self._forget_before(now)
        task_failures = self._per_task[failed]
        task_failures.append(now)
        self._total.append(now)
        window = "" if self.failure_window_s is None else f" within {self.failure_window_s:g} s"
        if len(task_failures) > self.max_failures_per_task:
            return RestartDecision(
                False,
                0.0,
                f"task {failed} failed {len(task_failures)} times{window}, more than "
                f"max_failures_per_task={self.max_failures_per_task}",
            )
        if len(self._total) > self.max_total_failures:
            return RestartDecision(
                False,
                0.0,
                f"the job had {len(self._total)} task failures{window}, more than "
                f"max_total_failures={self.max_total_failures}",
            )
        delay = self.delay_s * self.multiplier ** (len(task_failures) - 1)
        return RestartDecision(True, min(delay, self.max_delay_s))

    def failures(self, task: TaskId | None = None) -> int:
        return len(self._total) if task is None else len(self._per_task.get(task, ()))

    def _forget_before(self, now: float) -> None:
        if self.failure_window_s is None:
            return
        horizon = now - self.failure_window_s
        for times in (*self._per_task.values(), self._total):
            while times and times[0] < horizon:
                times.popleft()
