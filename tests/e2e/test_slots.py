"""Slots: a deploy waits for a free slot (``slot_request_timeout``), then fails the job
with a reason that says what to do. Real processes, real Kafka."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamer.testing import TopicFactory
from streamer.testing.cluster import LocalCluster, all_running
from streamer.testing.feeder import EventFeeder

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
KEYED = "examples.keyed_count:job"  # 8 tasks: events x2 -> count x4 -> sink x2


def run_keyed(cluster: LocalCluster, bootstrap: str, src: str, out: str, **extra: Any) -> str:
    """Submit the keyed job (individual restarts) and wait until all its tasks run."""
    job_id = cluster.submit(
        KEYED,
        {
            "strategy": "individual",
            "bootstrap_servers": bootstrap,
            "params": {"in": src, "out": out},
            **extra,
        },
    )
    cluster.wait_for(job_id, all_running, what="all tasks running")
    return job_id


def test_a_redeploy_without_a_slot_fails_the_job_after_the_timeout(
    tmp_path: Path, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """Two workers of 4 slots run the 8 tasks; one dies and no worker replaces it."""
    src, out = kafka_topics.create(2), kafka_topics.create(2)
    with LocalCluster(2, slots=4, warm=1, work_dir=tmp_path / "c", cwd=REPO) as cluster:
        job_id = run_keyed(cluster, kafka_bootstrap, src, out, slot_request_timeout=1.0)
        cluster.kill_worker("w1")
        status = cluster.wait_for(job_id, lambda s: s["state"] == "FAILED", what="job FAILED")
        reason = status["failure_reason"]
        assert "within slot_request_timeout=1 s (1 worker(s), 0 free slot(s))" in reason, reason
        assert reason.endswith("start more workers or lower the parallelism")
        assert [(w["worker_id"], w["used"]) for w in cluster.workers_status()] == [("w2", 0)]


def test_a_redeploy_waits_for_a_new_worker(
    tmp_path: Path, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """The only worker dies; its tasks wait for slots and run on the worker that replaces it."""
    src, out = kafka_topics.create(8), kafka_topics.create(4)
    with LocalCluster(1, slots=8, warm=1, work_dir=tmp_path / "c", cwd=REPO) as cluster:
        job_id = run_keyed(cluster, kafka_bootstrap, src, out, metrics_interval=0.5)
        feeder = EventFeeder(kafka_bootstrap, src, rate=100).start()
        try:
            cluster.kill_worker("w1")
            cluster.wait_for(
                job_id,
                lambda s: len(s["failovers"]) == 8 and not all_running(s),
                what="all 8 tasks failed",
            )
            cluster.add_worker("w2")
            status = cluster.wait_for(
                job_id,
                lambda s: all_running(s) and all(f["status"] == "done" for f in s["failovers"]),
                what="every task running on the new worker",
            )
        finally:
            feeder.stop()
        assert status["state"] == "RUNNING"
        assert sorted(f["cause"] for f in status["failovers"]) == ["worker w1 lost"] * 8
        assert {(t["worker"], t["attempt"]) for t in status["tasks"]} == {("w2", 1)}
        assert [(w["worker_id"], w["used"]) for w in cluster.workers_status()] == [("w2", 8)]


def test_a_job_larger_than_the_free_slots_is_refused_at_submission(
    tmp_path: Path, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    src, out = kafka_topics.create(2), kafka_topics.create(2)
    with LocalCluster(1, slots=3, warm=1, work_dir=tmp_path / "c", cwd=REPO) as cluster:
        with pytest.raises(Exception, match=r"job needs 8 slots but the workers have 3 free"):
            cluster.submit(
                KEYED, {"bootstrap_servers": kafka_bootstrap, "params": {"in": src, "out": out}}
            )
        assert [(w["worker_id"], w["used"]) for w in cluster.workers_status()] == [("w1", 0)]
