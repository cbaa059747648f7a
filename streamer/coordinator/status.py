"""The JSON status of a job (``streamer jobs``, ``GET /jobs/<id>``, ``streamer run``'s progress).

Pure functions of the job's parts; they never change anything.
"""

from __future__ import annotations

from typing import Any, Protocol

from streamer.coordinator.checkpoints import CheckpointCoordinator
from streamer.coordinator.diagnostics import JobDiagnostics, coordinator_log
from streamer.coordinator.execution import ExecutionStore
from streamer.coordinator.failover import FailoverHandler, FailoverLog
from streamer.coordinator.failover.records import FailoverRecord
from streamer.coordinator.scheduler import Scheduler
from streamer.coordinator.slots import SlotPool
from streamer.rpc import TaskState


class JobView(Protocol):
    """What the status reads of a ``JobMaster``."""

    job_id: str
    job_ref: str
    state: TaskState
    failure_reason: str | None
    started_at: float
    ended_at: float | None
    tasks: ExecutionStore
    failovers: FailoverLog
    handler: FailoverHandler
    scheduler: Scheduler
    checkpoints: CheckpointCoordinator
    diagnostics: JobDiagnostics

    @property
    def name(self) -> str: ...


def job_status(job: JobView) -> dict[str, Any]:
    """The whole status of ``job``: graph, tasks, failovers, checkpoints, totals."""
    return {
        "job_id": job.job_id,
        "name": job.name,
        "job_ref": job.job_ref,
        "state": str(job.state),
        "strategy": job.handler.strategy_name,
        "failure_reason": job.failure_reason,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "graph": job.scheduler.graph_dict,
        "tasks": task_rows(job.tasks, job.scheduler.slots, job.diagnostics),
        "kafka": job.diagnostics.kafka_summary(),
        "coordinator_log": coordinator_log(),
        "failovers": failover_dicts(job.failovers.records),
        "checkpoints": job.checkpoints.status(),
        **totals(job.tasks),
    }


def job_summary(job: JobView) -> dict[str, Any]:
    """One line's worth of ``job`` (``streamer jobs``)."""
    return {
        "job_id": job.job_id,
        "name": job.name,
        "state": str(job.state),
        "strategy": job.handler.strategy_name,
        "tasks": len(job.tasks),
        "running": running_count(job.tasks),
        "failovers": len(job.failovers.records),
        "failure_reason": job.failure_reason,
    }


def task_rows(
    store: ExecutionStore, slots: SlotPool, diagnostics: JobDiagnostics | None = None
) -> list[dict[str, Any]]:
    """One row per task; with ``diagnostics``, its ``recent_errors`` (all attempts) and
    ``logs`` (where each attempt's log is) too."""
    rows = []
    for task, te in sorted(store.items()):
        worker = slots.get(te.worker_id)
        rows.append(
            {
                "task": str(task),
                "vertex": task.vertex_id,
                "subtask": task.subtask,
                "attempt": te.attempt,
                "state": str(te.state),
                "worker": te.worker_id,
                "host": worker.host if worker else None,
                "pid": te.pid,
                "data_address": te.data_address,
                "error": te.error,
                "traceback": te.traceback,
                "metrics": te.metrics,
            }
        )
        if diagnostics is not None:
            rows[-1]["recent_errors"] = diagnostics.recent_errors(task)
            rows[-1]["logs"] = diagnostics.logs(task)
    return rows


def totals(store: ExecutionStore) -> dict[str, int]:
    """Records processed, read from Kafka and written to Kafka, over every task."""
    tes = list(store.values())
    return {
        "records_processed": sum(t.metrics.get("records_processed", 0) for t in tes),
        "records_in": sum(t.metrics.get("source", {}).get("records_in", 0) for t in tes),
        "records_out": sum(t.metrics.get("sink", {}).get("records_out", 0) for t in tes),
    }


def running_count(store: ExecutionStore) -> int:
    return sum(1 for te in store.values() if te.state == TaskState.RUNNING)


def failover_dicts(records: list[FailoverRecord]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in records]
