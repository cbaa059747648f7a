"""What the metrics and dashboard tests share: their job, started and fed."""

from __future__ import annotations

from typing import Any

from streamer.testing import TopicFactory
from streamer.testing.cluster import LocalCluster, Status, all_running
from streamer.testing.feeder import EventFeeder

JOB = "tests.e2e.monitoring_jobs:watermarked_count"
TASKS = sorted(
    [f"events#{i}" for i in range(2)]
    + [f"count#{i}" for i in range(4)]
    + [f"sink#{i}" for i in range(2)]
)


def start_job(
    cluster: LocalCluster, bootstrap: str, topics: TopicFactory, **settings: Any
) -> tuple[str, EventFeeder]:
    """Submit the job (individual restarts, checkpoints every second, metrics every
    0.5 s), feed it 300 events/s, and wait until every sink task has written."""
    src, out = topics.create(8), topics.create(4)
    config = {
        "strategy": "individual",
        "bootstrap_servers": bootstrap,
        "checkpoint_interval": 1.0,
        "metrics_interval": 0.5,
        "params": {"in": src, "out": out},
        **settings,
    }
    job_id = cluster.submit(JOB, config)
    cluster.wait_for(job_id, all_running, what="all tasks running")
    feeder = EventFeeder(bootstrap, src, rate=300).start()
    cluster.wait_for(job_id, sinks_wrote, what="output from every sink task")
    return job_id, feeder


def sinks_wrote(status: Status) -> bool:
    sinks = [t for t in status["tasks"] if t["vertex"] == "sink"]
    return all(t["metrics"].get("sink", {}).get("records_out", 0) > 0 for t in sinks)


def attempt_of(status: Status, task: str) -> int:
    return int(next(t["attempt"] for t in status["tasks"] if t["task"] == task))


def failover_done(status: Status, n: int = 1) -> bool:
    f = status["failovers"]
    return len(f) >= n and f[n - 1]["status"] == "done"
