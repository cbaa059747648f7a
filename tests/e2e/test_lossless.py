"""Lossless single-task recovery (``individual_recovery=lossless``, DESIGN.md §9):
producers retain what they sent since the last completed checkpoint and replay it to
a restarted task, which re-executes in the order its determinants (collected from its
consumers) record, while the consumers drop what it re-emits. Sinks, counters and
sources each recover **alone and exactly**; a worker kill ends exact too.

The job is ``examples.keyed_count`` (events x2 -hash-> count x4 -rebalance-> sink x2,
RocksDB state, checkpoints every 0.5 s, exactly-once sink); a read-committed checker
decides.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

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


def submit(
    cluster: LocalCluster, bootstrap: str, topics: TopicFactory, **settings: Any
) -> tuple[str, str, str]:
    src, out = topics.create(8), topics.create(4)
    job_id = cluster.submit(
        "examples.keyed_count:job",
        {
            "strategy": "individual",
            "individual_recovery": "lossless",
            "bootstrap_servers": bootstrap,
            "metrics_interval": 0.5,
            "checkpoint_interval": 0.5,
            "checkpoint_dir": str(cluster.work_dir / "checkpoints"),
            "params": {"in": src, "out": out, "delivery": "exactly_once"},
            **settings,
        },
    )
    cluster.wait_for(job_id, all_running, what="all running")
    return job_id, src, out


def recovered(n: int) -> Any:
    def check(s: Status) -> bool:
        f = s["failovers"]
        return (
            len(f) >= n
            and f[n - 1]["status"] == "done"
            and (f[n - 1]["fell_back"] or f[n - 1]["records_replayed"] is not None)
            and all_running(s)
        )

    return check


def exact_output(bootstrap: str, out: str, produced: Any) -> None:
    outputs = [
        orjson.loads(r.value)  # type: ignore[arg-type]
        for r in read_topic(bootstrap, out, expected=sum(produced.values()), timeout=60, idle=2.5)
    ]
    report = check_sequences(produced, outputs)
    assert report.exact, report.summary()
    assert len(outputs) == sum(produced.values())


def stop_and_check_exact(
    cluster: LocalCluster, job_id: str, feeder: EventFeeder, bootstrap: str, out: str
) -> Status:
    """Stop the input once two more checkpoints completed, let two more commit what is
    left, and check the committed output against what was produced."""
    more_checkpoints(cluster, job_id, 2)
    produced = feeder.stop()
    time.sleep(1.0)
    status = more_checkpoints(cluster, job_id, 2)
    exact_output(bootstrap, out, produced)
    return status


@pytest.mark.parametrize(
    ("victims", "replayed"),
    [
        # a sink: nobody downstream saw its output; its producers replay its input
        (["sink#1", "sink#0", "sink#1"], True),
        # a count task: two input channels (their order is logged as determinants) and
        # consumers (which drop what its new attempt re-emits)
        (["count#2", "count#0", "count#2"], True),
        # a source: its partition interleaving and checkpoint positions are logged; its
        # new attempt re-reads Kafka from the checkpoint in the logged order
        (["events#1", "events#0", "events#1"], False),
    ],
    ids=["sinks", "counters", "sources"],
)
def test_killed_tasks_recover_alone_and_exactly(
    victims: list[str],
    replayed: bool,
    cluster: LocalCluster,
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
) -> None:
    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics)
    feeder = EventFeeder(kafka_bootstrap, src, rate=300, keys=32).start()
    for n, victim in enumerate(victims, start=1):
        more_checkpoints(cluster, job_id, 2)
        # 0.2 s into the checkpoint interval: killed right after a checkpoint, a task can
        # have been sent nothing since its barrier, and there is nothing to replay
        time.sleep(0.2)
        cluster.kill_task(job_id, victim)
        status = cluster.wait_for(job_id, recovered(n), what=f"recovery of {victim}")
        rec = status["failovers"][n - 1]
        assert rec["tasks_restarted"] == [victim] and not rec["fell_back"], rec
        assert rec["records_dropped"] == 0, rec
        assert rec["records_deduplicated"] is not None, rec
        assert rec["retention_overflows"] == 0 and rec["lossy_reason"] is None, rec
        # retention figures: what the producers replayed came out of memory (64 MiB)
        assert rec["bytes_replayed_from_disk"] == 0, rec
        if replayed:  # a source has no producers: it re-reads Kafka
            assert rec["records_replayed"] > 0, rec
            assert rec["bytes_replayed_from_memory"] > 0, rec
        else:
            assert rec["records_replayed"] == rec["bytes_replayed_from_memory"] == 0, rec
    status = stop_and_check_exact(cluster, job_id, feeder, kafka_bootstrap, out)
    killed = Counter(victims)
    assert {t["task"]: t["attempt"] for t in status["tasks"]} == {t: killed[t] for t in ALL_TASKS}


def test_retention_spilled_to_disk_replays_from_disk_exactly(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """With ``retention_bytes=1`` every retained frame is spilled at once: a killed
    counter's replay is read back from its producers' spill files, and the output is
    exact."""
    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics, retention_bytes=1)
    feeder = EventFeeder(kafka_bootstrap, src, rate=300, keys=32).start()
    more_checkpoints(cluster, job_id, 2)
    cluster.kill_task(job_id, "count#1")
    status = cluster.wait_for(job_id, recovered(1), what="recovery of count#1")
    rec = status["failovers"][0]
    assert rec["tasks_restarted"] == ["count#1"] and not rec["fell_back"], rec
    assert rec["records_replayed"] > 0 and rec["records_dropped"] == 0, rec
    assert rec["bytes_replayed_from_disk"] > 0, rec
    assert rec["bytes_replayed_from_memory"] == 0 and rec["retention_overflows"] == 0, rec
    stop_and_check_exact(cluster, job_id, feeder, kafka_bootstrap, out)


def test_a_killed_worker_ends_with_exact_output(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """A worker loss fails several tasks at once (a source among them, so the region
    restarts, and some tasks lose their consumers' copies of their determinants):
    whatever each failover chose, the output is exact."""
    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics)
    feeder = EventFeeder(kafka_bootstrap, src, rate=300, keys=32).start()
    more_checkpoints(cluster, job_id, 2)
    cluster.kill_worker("w1")
    status = cluster.wait_for(
        job_id,
        lambda s: (
            bool(s["failovers"])
            and all(f["status"] in ("done", "superseded") for f in s["failovers"])
            and all_running(s)
        ),
        what="recovery on the surviving worker",
    )
    assert {t["worker"] for t in status["tasks"]} == {"w2"}
    stop_and_check_exact(cluster, job_id, feeder, kafka_bootstrap, out)


def test_rapid_kills_of_every_kind_of_task_end_with_exact_output(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """16 SIGKILLs of sources, counters and sinks 0.5-2 s apart, overlapping recoveries
    included: every failover ends, and the committed output is exactly once."""
    import random

    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics)
    feeder = EventFeeder(kafka_bootstrap, src, rate=300, keys=32).start()
    more_checkpoints(cluster, job_id, 2)
    rng = random.Random(21)
    killed = []
    for _ in range(16):
        victim = rng.choice(ALL_TASKS)
        cluster.kill_task(job_id, victim)
        killed.append(victim)
        time.sleep(rng.uniform(0.5, 2.0))
    status = cluster.wait_for(
        job_id,
        lambda s: (
            all(f["status"] in ("done", "superseded") for f in s["failovers"]) and all_running(s)
        ),
        timeout=120,
        what="quiet after the kills",
    )
    records = status["failovers"]
    assert {r["task"] for r in records} <= set(killed)
    stop_and_check_exact(cluster, job_id, feeder, kafka_bootstrap, out)
