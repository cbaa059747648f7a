"""FailoverLog's phase timestamps: ``running_at`` is the task's own clock, bounded."""

from __future__ import annotations

import time

from streamer.coordinator.failover.records import FailoverLog
from streamer.graph import TaskId

TASK = TaskId("count", 1)


def _deployed(log: FailoverLog, deployed_at: float) -> None:
    rec = log.open(TASK, 0, "individual", "process killed by signal 9")
    log.claim(rec, [TASK])
    rec.deployed_at = deployed_at


def test_running_at_is_the_tasks_report_time_not_the_receive_time() -> None:
    log = FailoverLog()
    deployed = time.time() - 1.0
    _deployed(log, deployed)
    rec = log.running(TASK, at=deployed + 0.5)
    assert rec is not None and rec.running_at == deployed + 0.5
    assert rec.state_restored_at == deployed + 0.5


def test_running_at_stays_between_deploy_and_now_under_clock_skew() -> None:
    log = FailoverLog()
    deployed = time.time() - 1.0
    _deployed(log, deployed)
    rec = log.running(TASK, at=deployed - 30.0)  # a task clock far behind
    assert rec is not None and rec.running_at == deployed
    rec.running_at = None
    before = time.time()
    rec = log.running(TASK, at=before + 30.0)  # a task clock far ahead
    assert rec is not None and before <= rec.running_at <= time.time()


def test_running_without_a_report_time_uses_the_receive_time() -> None:
    log = FailoverLog()
    _deployed(log, time.time() - 1.0)
    before = time.time()
    rec = log.running(TASK)
    assert rec is not None and before <= rec.running_at <= time.time()


def test_a_superseded_failover_claims_nothing_so_checkpoints_can_start_again() -> None:
    """A lossless failover that was superseded while it collected determinants, and
    then falls back to its region, must not own tasks: it would never end, and
    ``active`` (which holds back every checkpoint) would stay true for good."""
    log = FailoverLog()
    other = TaskId("count", 2)
    first = log.open(TASK, 0, "individual", "process killed by signal 9")
    log.claim(first, [TASK])
    second = log.open(other, 0, "individual", "process killed by signal 9")
    log.claim(second, [TASK, other])  # a region restart that includes TASK
    assert first.status == "superseded" and first.superseded_by == second.id
    log.claim(first, [TASK, other])  # the first one's late fall-back to its region
    assert log.owner(TASK) is second and log.owner(other) is second
    log.running(TASK)
    log.running(other)
    assert log.set_done_if_all_running(second)
    assert not log.active
