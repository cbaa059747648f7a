"""Failover records: one ``FailoverRecord`` per failure, and the ``FailoverLog``
that knows which in-progress failover is bringing each task back.

A record ends exactly once: ``done`` (every task it restarted runs again, and for
an individual restart its consumers switched channels), ``superseded`` (a later
failover restarted a task it was still waiting for, so that one finishes the
work), ``job_failed`` (the restart limits were reached) or ``job_ended`` (the job
was canceled or failed meanwhile). No record stays ``in_progress`` once the job
is quiet: that is what lets ``streamer run`` and the benchmarks wait for it.

Threading: the coordinator's loop only; not thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from streamer.graph import TaskId

IN_PROGRESS, DONE, SUPERSEDED = "in_progress", "done", "superseded"
JOB_FAILED, JOB_ENDED = "job_failed", "job_ended"


@dataclass
class FailoverRecord:
    """One failover with its timings (epoch seconds) and effects."""

    id: int
    task: str
    failed_attempt: int
    strategy: str
    cause: str
    detected_at: float
    kill_requested_at: float | None = None
    deployed_at: float | None = None
    plan_ready_at: float | None = None  # lossless: its determinants were collected
    state_restored_at: float | None = None
    running_at: float | None = None
    channels_updated_at: float | None = None
    completed_at: float | None = None
    tasks_restarted: list[str] = field(default_factory=list)
    records_dropped: int | None = None
    records_cleared: int | None = None
    records_replayed: int | None = None  # lossless: what the producers sent again
    records_deduplicated: int | None = None  # lossless: re-emitted outputs consumers dropped
    bytes_replayed_from_memory: int | None = None  # lossless: replayed out of retention memory
    bytes_replayed_from_disk: int | None = None  # lossless: replayed out of spill files
    retention_overflows: int | None = None  # producers' retention for it gave up its history
    replay_from: int | None = None  # lossless: the checkpoint the new attempt restored
    lossy_reason: str | None = None  # lossless recovery went lossy instead (retention_overflow)
    counting: bool = False  # the counts above come with the peers' next metrics reports
    fell_back: bool = False
    fallback_reason: str | None = None
    fallback_at: float | None = None  # when the individual protocol gave up
    superseded_by: int | None = None
    status: str = IN_PROGRESS

    def fall_back(self, reason: str) -> None:
        """The individual protocol gave up: a region restart carries on, for ``reason``."""
        self.fell_back, self.fallback_reason, self.fallback_at = True, reason, time.time()

    @property
    def in_progress(self) -> bool:
        return self.status == IN_PROGRESS

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.completed_at is not None and self.status == DONE:
            start = self.kill_requested_at or self.detected_at
            out["recovery_seconds"] = round(self.completed_at - start, 4)
        return out


class FailoverLog:
    """Every record of a job, and for each task the in-progress failover that owns it."""

    def __init__(self) -> None:
        self.records: list[FailoverRecord] = []
        self._owner: dict[TaskId, FailoverRecord] = {}
        self._outstanding: dict[int, set[TaskId]] = {}  # per record: tasks not running yet
        self._kill_requests: dict[TaskId, float] = {}
        self.on_end: list[Callable[[FailoverRecord], None]] = []  # observers (benchmarks)

    def request_kill(self, task: TaskId) -> None:
        """A client asked to kill ``task``: its next record measures from now."""
        self._kill_requests[task] = time.time()

    def open(self, task: TaskId, attempt: int, strategy: str, cause: str) -> FailoverRecord:
        rec = FailoverRecord(
            id=len(self.records) + 1,
            task=str(task),
            failed_attempt=attempt,
            strategy=strategy,
            cause=cause,
            detected_at=time.time(),
            kill_requested_at=self._kill_requests.pop(task, None),
        )
        self.records.append(rec)
        return rec

    @property
    def active(self) -> bool:
        return bool(self._owner)

    def owner(self, task: TaskId) -> FailoverRecord | None:
        return self._owner.get(task)

    def claim(self, rec: FailoverRecord, tasks: Iterable[TaskId]) -> None:
        """``rec`` restarts ``tasks``; an older failover still waiting for one of them
        is superseded (``rec`` finishes its work). A record that already ended (it
        was superseded while it waited) claims nothing: were it to own a task, it
        would never end, and no checkpoint would start again."""
        if not rec.in_progress:
            return
        tasks = set(tasks)
        rec.tasks_restarted = sorted(str(t) for t in tasks)
        for task in tasks:
            older = self._owner.get(task)
            if older is not None and older is not rec:
                self._end(older, SUPERSEDED, superseded_by=rec.id)
        for task in tasks:
            self._owner[task] = rec
        self._outstanding[rec.id] = tasks

    def running(self, task: TaskId, at: float | None = None) -> FailoverRecord | None:
        """``task``'s new attempt runs since ``at`` (the task's clock, so the coordinator's
        receive delay does not shift the phase; kept within [deployed_at, now]); returns
        its failover, ended ``done`` if that was the last task of a set restart (an
        individual one ends with ``done``)."""
        rec = self._owner.get(task)
        if rec is None:
            return None
        now = time.time()
        if at is not None:
            now = max(min(at, now), rec.deployed_at or 0.0)
        rec.state_restored_at = rec.state_restored_at or now
        rec.running_at = now
        outstanding = self._outstanding.get(rec.id)
        if outstanding is not None:
            outstanding.discard(task)
        return rec

    def set_done_if_all_running(self, rec: FailoverRecord) -> bool:
        if self._outstanding.get(rec.id):
            return False
        rec.channels_updated_at = time.time()
        self.done(rec)
        return True

    def done(self, rec: FailoverRecord) -> None:
        self._end(rec, DONE)

    def ended(self, rec: FailoverRecord, status: str) -> None:
        """End ``rec`` without recovery (``superseded`` before it restarted anything,
        ``job_failed``)."""
        self._end(rec, status)

    def end_all(self, status: str = JOB_ENDED) -> None:
        """The job ended: every failover still in progress ends with ``status``; counts
        still to come will not (nobody reports metrics any more)."""
        for rec in self.records:
            rec.counting = False
            if rec.in_progress:
                self._end(rec, status)

    def _end(self, rec: FailoverRecord, status: str, superseded_by: int | None = None) -> None:
        if not rec.in_progress:
            return
        rec.status = status
        rec.superseded_by = superseded_by
        rec.completed_at = rec.channels_updated_at if status == DONE else time.time()
        if rec.completed_at is None:
            rec.completed_at = time.time()
        for task in [t for t, owner in self._owner.items() if owner is rec]:
            del self._owner[task]
        self._outstanding.pop(rec.id, None)
        for observer in self.on_end:
            observer(rec)
