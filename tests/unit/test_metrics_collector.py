"""The Prometheus collector over a job status: outcomes, histogram buckets, lost workers
and marker watermarks (the e2e test checks the same families during a real job)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.coordinator.metrics import metrics_registry, render


def failover(i: int, status: str, seconds: float | None, fell_back: bool = False) -> Any:
    rec = {"id": i, "task": "count#1", "strategy": "individual", "status": status}
    rec["fell_back"] = fell_back
    if seconds is not None:
        rec["recovery_seconds"] = seconds
    return rec


STATUS: dict[str, Any] = {
    "job_id": "job-1",
    "name": "counts",
    "state": "RUNNING",
    "strategy": "individual",
    "tasks": [
        {
            "vertex": "count",
            "subtask": 0,
            "worker": "w1",
            "attempt": 2,
            "state": "RUNNING",
            "metrics": {"records_processed": 7, "watermark": -(2**63)},  # none yet
        },
        {"vertex": "count", "subtask": 1, "worker": None, "attempt": 0, "state": "DEPLOYING"},
    ],
    "failovers": [
        failover(1, "done", 0.04),
        failover(2, "done", 3.0, fell_back=True),
        failover(3, "superseded", None),
        failover(4, "done", 0.2),
        failover(5, "in_progress", None),
    ],
    "checkpoints": {"completed": 3, "aborted": 1, "history": []},
}


def scrape(workers: list[dict[str, Any]]) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    def route(parts: list[str]) -> Any:
        if parts == ["jobs"]:
            return [{"job_id": "job-1"}]
        if parts == ["jobs", "job-1"]:
            return STATUS
        return workers if parts == ["workers"] else None

    registry = metrics_registry(route)
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for _ in range(2):  # the second scrape sees what the first remembered
        out = {}
        for family in text_string_to_metric_families(render(registry).decode()):
            for s in family.samples:
                out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
        workers = workers[1:]
    return out


def test_failovers_by_outcome_and_the_recovery_histogram() -> None:
    m = scrape([])
    job = ("job", "job-1")
    assert m["streamer_job_failovers_total"] == {
        (job, ("outcome", "done"), ("strategy", "individual")): 2.0,
        (job, ("outcome", "fell_back"), ("strategy", "individual")): 1.0,
        (job, ("outcome", "superseded"), ("strategy", "individual")): 1.0,
    }
    assert m["streamer_job_failovers_in_progress"] == {(job,): 1.0}
    done = (job, ("outcome", "done"), ("strategy", "individual"))
    buckets = {
        dict(k)["le"]: v
        for k, v in m["streamer_job_failover_recovery_seconds_bucket"].items()
        if dict(k)["outcome"] == "done"
    }
    assert buckets["0.025"] == 0 and buckets["0.05"] == 1 and buckets["0.25"] == 2
    assert buckets["+Inf"] == 2
    assert m["streamer_job_failover_recovery_seconds_sum"][done] == pytest.approx(0.24)
    fell = (job, ("outcome", "fell_back"), ("strategy", "individual"))
    assert m["streamer_job_failover_recovery_seconds_count"][fell] == 1
    assert m["streamer_job_checkpoints_total"] == {
        (job, ("outcome", "aborted")): 1.0,
        (job, ("outcome", "completed")): 3.0,
    }
    assert "streamer_job_last_checkpoint_id" not in m  # none completed in the history


def test_tasks_without_reports_and_marker_watermarks() -> None:
    m = scrape([])
    task0 = (("job", "job-1"), ("subtask", "0"), ("vertex", "count"), ("worker", "w1"))
    task1 = (("job", "job-1"), ("subtask", "1"), ("vertex", "count"), ("worker", ""))
    assert m["streamer_task_attempt"] == {task0: 2.0, task1: 0.0}
    assert m["streamer_task_running"] == {task0: 1.0, task1: 0.0}
    assert m["streamer_task_records_in_total"] == {task0: 7.0}  # task1 has not reported
    assert "streamer_task_watermark_seconds" not in m  # MIN_WATERMARK: none yet


def test_a_worker_that_is_gone_reports_down() -> None:
    w1 = {"worker_id": "w1", "host": "a", "slots": 8, "used": 2, "heartbeat_age": 0.5}
    w2 = {"worker_id": "w2", "host": "b", "slots": 4, "used": 0, "heartbeat_age": 0.1}
    m = scrape([w1, w2])  # the second scrape no longer lists w1
    assert m["streamer_worker_up"] == {
        (("host", "a"), ("worker", "w1")): 0.0,
        (("host", "b"), ("worker", "w2")): 1.0,
    }
    assert m["streamer_worker_slots"] == {(("host", "b"), ("worker", "w2")): 4.0}
