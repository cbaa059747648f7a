"""Exactly-once with checkpoints: SIGKILL tasks repeatedly; a read-committed checker decides.

The keyed count job keeps its per-key count in RocksDB state and writes
``{"key", "seq", "count"}`` through the transactional sink. Under ``full`` and
``region`` restarts every ``(key, seq)`` must appear exactly once with
``count == seq + 1``. Under ``individual`` only the failed task's key groups may
lose records (and see rolled-back counts); every other key stays exact.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from streamer.graph import subtask_for_key
from streamer.runtime.faults import FaultHooks
from streamer.testing import TopicFactory, read_topic
from streamer.testing.checker import check_sequences
from streamer.testing.cluster import LocalCluster, Status, all_running
from streamer.testing.feeder import EventFeeder
from tests.e2e.helpers import completed_checkpoints, more_checkpoints

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]


def submit(
    cluster: LocalCluster, bootstrap: str, topics: TopicFactory, strategy: str, **extra: Any
) -> tuple[str, str, str]:
    src, out = topics.create(8), topics.create(4)
    job_id = cluster.submit(
        "examples.keyed_count:job",
        {
            "strategy": strategy,
            "individual_recovery": "lossy",  # `individual` here means ByteDance's lossy mode
            "bootstrap_servers": bootstrap,
            "metrics_interval": 0.5,
            "checkpoint_interval": 0.5,
            "checkpoint_dir": str(cluster.work_dir / "checkpoints"),
            "params": {"in": src, "out": out, "delivery": "exactly_once"},
            **extra,
        },
    )
    cluster.wait_for(job_id, all_running, what="all running")
    return job_id, src, out


def failovers_done(n: int) -> Any:
    def done(s: Status) -> bool:
        failovers = s["failovers"]
        return (
            len(failovers) >= n and all(f["status"] == "done" for f in failovers) and all_running(s)
        )

    return done


def committed_outputs(bootstrap: str, topic: str, expected: int) -> list[dict[str, Any]]:
    records = read_topic(bootstrap, topic, expected=expected, timeout=60, idle=2.0)
    return [orjson.loads(r.value) for r in records]  # type: ignore[arg-type]


@pytest.mark.parametrize("strategy", ["full", "region"])
def test_exactly_once_across_repeated_kills(
    strategy: str, cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics, strategy)
    feeder = EventFeeder(kafka_bootstrap, src, rate=250, keys=32).start()
    victims = ["count#1", "events#0", "sink#1", "count#3"]
    for n, victim in enumerate(victims, start=1):
        more_checkpoints(cluster, job_id, 2)
        cluster.kill_task(job_id, victim)
        cluster.wait_for(job_id, failovers_done(n), what=f"recovery from killing {victim}")
    time.sleep(1.0)
    produced = feeder.stop()
    total = sum(produced.values())
    outputs = committed_outputs(kafka_bootstrap, out, total)
    status = cluster.status(job_id)
    report = check_sequences(produced, outputs)
    assert report.exact, report.summary()
    assert len(outputs) == total
    assert [f["tasks_restarted"] for f in status["failovers"]] == [
        sorted(t["task"] for t in status["tasks"])
    ] * len(victims)
    assert status["checkpoints"]["restored_from"] is not None


def test_individual_loses_only_the_failed_key_groups(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics, "individual")
    feeder = EventFeeder(kafka_bootstrap, src, rate=250, keys=32).start()
    cluster.wait_for(job_id, lambda s: completed_checkpoints(s) >= 3, what="three checkpoints")
    cluster.kill_task(job_id, "count#2")
    cluster.wait_for(job_id, failovers_done(1), what="recovery")
    more_checkpoints(cluster, job_id, 2)
    produced = feeder.stop()
    time.sleep(1.5)
    outputs = [
        orjson.loads(r.value)  # type: ignore[arg-type]
        for r in read_topic(kafka_bootstrap, out, timeout=60, idle=2.0)
    ]
    report = check_sequences(produced, outputs)
    failed_keys = {k for k in produced if subtask_for_key(k, 128, 4) == 2}
    other_keys = set(produced) - failed_keys
    assert all(report.keys[k].exact for k in other_keys), report.summary()
    assert not any(report.keys[k].duplicated for k in produced)
    # the failed task's state rolled back to its checkpoint: its keys are not all exact
    assert set(report.inexact_keys()) <= failed_keys
    rec = cluster.status(job_id)["failovers"][0]
    assert rec["tasks_restarted"] == ["count#2"]
    lost = report.lost_per_key_group()
    assert set(lost) <= {kg for kg in range(64, 96)}  # count#2 owns key groups 64..95
    assert cluster.status(job_id)["checkpoints"]["restored_from"]["checkpoint_id"] >= 3


@pytest.mark.parametrize(
    "cluster", [FaultHooks(die_after_commit={"sink#1": 4})], indirect=True, ids=["die_after_commit"]
)
def test_a_sink_that_dies_right_after_its_commit_is_not_written_twice(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """sink#1 commits checkpoint n (n >= 4) and dies before anyone hears of it: the
    coordinator restores n believing it uncommitted; the commit marker says otherwise."""
    job_id, src, out = submit(
        cluster,
        kafka_bootstrap,
        kafka_topics,
        "region",
    )
    feeder = EventFeeder(kafka_bootstrap, src, rate=250, keys=32).start()
    status = cluster.wait_for(job_id, failovers_done(1), what="recovery of sink#1")
    rec = status["failovers"][0]
    assert (rec["task"], rec["cause"]) == ("sink#1", "process killed by signal 9")
    restored = status["checkpoints"]["restored_from"]["checkpoint_id"]
    assert restored >= 4
    more_checkpoints(cluster, job_id, 2)
    time.sleep(1.0)
    produced = feeder.stop()
    total = sum(produced.values())
    outputs = committed_outputs(kafka_bootstrap, out, total)
    report = check_sequences(produced, outputs)
    assert report.exact, report.summary()
    assert len(outputs) == total
    log = next((cluster.work_dir / "workers").rglob("sink-1.attempt1.log")).read_text()
    assert f"commit marker at epoch {restored}; re-wrote 0 records of later epochs" in log
