"""Retention past its bounds under lossless single-task recovery: the job setting
``retention_overflow`` chooses a region restart (exact; the default) or ByteDance's
lossy recovery of the task alone (what was routed to it since the checkpoint is lost
and counted).

``retention_bytes=1`` and ``retention_spill_bytes=0`` make every producer's retention
give up its history at once, so a killed counter's new attempt is always refused its
replay (``cannot replay from checkpoint N: retention overflowed``). The job is
``examples.keyed_count`` (events x2 -hash-> count x4 -rebalance-> sink x2), whose
pipelined region is the whole job.
"""

from __future__ import annotations

import time

import orjson
import pytest

from streamer.testing import TopicFactory, read_topic
from streamer.testing.checker import check_sequences
from streamer.testing.cluster import LocalCluster, Status, all_running
from streamer.testing.feeder import EventFeeder
from tests.e2e.helpers import more_checkpoints

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

ALL_TASKS = sorted(
    [f"events#{i}" for i in range(2)]
    + [f"count#{i}" for i in range(4)]
    + [f"sink#{i}" for i in range(2)]
)


def run_and_kill(
    cluster: LocalCluster, bootstrap: str, topics: TopicFactory, on_overflow: str
) -> tuple[str, str, EventFeeder, Status]:
    src, out = topics.create(8), topics.create(4)
    job_id = cluster.submit(
        "examples.keyed_count:job",
        {
            "strategy": "individual",
            "individual_recovery": "lossless",
            "retention_bytes": 1,
            "retention_spill_bytes": 0,
            "retention_overflow": on_overflow,
            "bootstrap_servers": bootstrap,
            "metrics_interval": 0.5,
            "checkpoint_interval": 0.5,
            "checkpoint_dir": str(cluster.work_dir / "checkpoints"),
            "params": {"in": src, "out": out, "delivery": "exactly_once"},
        },
    )
    cluster.wait_for(job_id, all_running, what="all running")
    feeder = EventFeeder(bootstrap, src, rate=300, keys=32).start()
    more_checkpoints(cluster, job_id, 2)
    cluster.kill_task(job_id, "count#2")
    status = cluster.wait_for(
        job_id,
        lambda s: (
            len(s["failovers"]) >= 1
            and s["failovers"][0]["status"] == "done"
            and not s["failovers"][0]["counting"]
            and all_running(s)
        ),
        what="recovery of count#2",
    )
    return job_id, out, feeder, status


def test_overflow_falls_back_to_a_region_restart_by_default(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, out, feeder, status = run_and_kill(cluster, kafka_bootstrap, kafka_topics, "region")
    records = status["failovers"]
    assert len(records) == 1, records  # the refused attempt continues the kill's failover
    rec = records[0]
    assert rec["fell_back"] and rec["lossy_reason"] is None, rec
    reason = rec["fallback_reason"]
    assert "retention overflowed" in reason and "retention_overflow=region" in reason, rec
    assert rec["tasks_restarted"] == ALL_TASKS, rec  # keyed_count's region: the whole job
    assert rec["records_dropped"] is None and rec["replay_from"] is None, rec
    # a region restart replays from the checkpoint: exact
    more_checkpoints(cluster, job_id, 2)
    produced = feeder.stop()
    time.sleep(1.0)
    more_checkpoints(cluster, job_id, 2)
    outputs = [
        orjson.loads(r.value)  # type: ignore[arg-type]
        for r in read_topic(
            kafka_bootstrap, out, expected=sum(produced.values()), timeout=60, idle=2.5
        )
    ]
    report = check_sequences(produced, outputs)
    assert report.exact, report.summary()


def test_overflow_recovers_the_task_alone_and_lossy_when_set(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    _job, _out, feeder, status = run_and_kill(cluster, kafka_bootstrap, kafka_topics, "lossy")
    feeder.stop()
    records = status["failovers"]
    assert len(records) == 1, records
    rec = records[0]
    assert not rec["fell_back"] and rec["fallback_reason"] is None, rec
    assert rec["tasks_restarted"] == ["count#2"], rec
    assert "retention overflowed" in rec["lossy_reason"], rec
    assert "retention_overflow=lossy" in rec["lossy_reason"], rec
    assert rec["replay_from"] is None, rec
    assert rec["records_dropped"] > 0, rec  # counted like ByteDance's lossy protocol
    assert rec["retention_overflows"] > 0, rec
    assert rec["records_replayed"] == 0, rec
    attempts = {t["task"]: t["attempt"] for t in status["tasks"]}
    # the kill's attempt 1 was refused its replay; attempt 2 runs without one
    assert attempts == {t: (2 if t == "count#2" else 0) for t in ALL_TASKS}, attempts
