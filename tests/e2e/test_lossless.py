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
from typing import Any

import orjson
import pytest

from streamer.testing import TopicFactory, read_topic
from streamer.testing.checker import check_sequences
from streamer.testing.cluster import LocalCluster, Status, all_running
from streamer.testing.feeder import EventFeeder

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

ALL_TASKS = sorted(
    [f"events#{i}" for i in range(2)]
    + [f"count#{i}" for i in range(4)]
    + [f"sink#{i}" for i in range(2)]
)


def submit(cluster: LocalCluster, bootstrap: str, topics: TopicFactory) -> tuple[str, str, str]:
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
        },
    )
    cluster.wait_for(job_id, all_running, what="all running")
    return job_id, src, out


def checkpoints(status: Status) -> int:
    return int(status["checkpoints"]["completed"])


def more_checkpoints(cluster: LocalCluster, job_id: str, n: int) -> Status:
    start = checkpoints(cluster.status(job_id))
    return cluster.wait_for(
        job_id, lambda s: checkpoints(s) >= start + n, what=f"{n} more checkpoints"
    )


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


def test_a_killed_sink_recovers_alone_and_exactly(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics)
    feeder = EventFeeder(kafka_bootstrap, src, rate=300, keys=32).start()
    for n, victim in enumerate(["sink#1", "sink#0", "sink#1"], start=1):
        more_checkpoints(cluster, job_id, 2)
        cluster.kill_task(job_id, victim)
        status = cluster.wait_for(job_id, recovered(n), what=f"recovery of {victim}")
        rec = status["failovers"][n - 1]
        assert rec["tasks_restarted"] == [victim] and not rec["fell_back"], rec
        assert rec["records_replayed"] > 0 and rec["records_dropped"] == 0, rec
    more_checkpoints(cluster, job_id, 2)
    produced = feeder.stop()
    time.sleep(1.0)
    more_checkpoints(cluster, job_id, 2)
    status = cluster.status(job_id)
    expected = {"sink#0": 1, "sink#1": 2}
    assert {t["task"]: t["attempt"] for t in status["tasks"]} == {
        t: expected.get(t, 0) for t in ALL_TASKS
    }
    exact_output(kafka_bootstrap, out, produced)


def test_killed_counters_recover_alone_and_exactly(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """A count task has two input channels (its order is logged as determinants) and
    consumers (which drop what its new attempt re-emits)."""
    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics)
    feeder = EventFeeder(kafka_bootstrap, src, rate=300, keys=32).start()
    for n, victim in enumerate(["count#2", "count#0", "count#2"], start=1):
        more_checkpoints(cluster, job_id, 2)
        cluster.kill_task(job_id, victim)
        status = cluster.wait_for(job_id, recovered(n), what=f"recovery of {victim}")
        rec = status["failovers"][n - 1]
        assert rec["tasks_restarted"] == [victim] and not rec["fell_back"], rec
        assert rec["records_replayed"] > 0 and rec["records_dropped"] == 0, rec
        assert rec["records_deduplicated"] is not None, rec
    more_checkpoints(cluster, job_id, 2)
    produced = feeder.stop()
    time.sleep(1.0)
    more_checkpoints(cluster, job_id, 2)
    status = cluster.status(job_id)
    expected = {"count#0": 1, "count#2": 2}
    assert {t["task"]: t["attempt"] for t in status["tasks"]} == {
        t: expected.get(t, 0) for t in ALL_TASKS
    }
    exact_output(kafka_bootstrap, out, produced)


def test_killed_sources_recover_alone_and_exactly(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """A source's partition interleaving and checkpoint positions are logged: its new
    attempt re-reads Kafka from the checkpoint in the logged order."""
    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics)
    feeder = EventFeeder(kafka_bootstrap, src, rate=300, keys=32).start()
    for n, victim in enumerate(["events#1", "events#0", "events#1"], start=1):
        more_checkpoints(cluster, job_id, 2)
        cluster.kill_task(job_id, victim)
        status = cluster.wait_for(job_id, recovered(n), what=f"recovery of {victim}")
        rec = status["failovers"][n - 1]
        assert rec["tasks_restarted"] == [victim] and not rec["fell_back"], rec
        assert rec["records_dropped"] == 0, rec
    more_checkpoints(cluster, job_id, 2)
    produced = feeder.stop()
    time.sleep(1.0)
    more_checkpoints(cluster, job_id, 2)
    status = cluster.status(job_id)
    expected = {"events#0": 1, "events#1": 2}
    assert {t["task"]: t["attempt"] for t in status["tasks"]} == {
        t: expected.get(t, 0) for t in ALL_TASKS
    }
    exact_output(kafka_bootstrap, out, produced)


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
    more_checkpoints(cluster, job_id, 2)
    produced = feeder.stop()
    time.sleep(1.0)
    more_checkpoints(cluster, job_id, 2)
    exact_output(kafka_bootstrap, out, produced)


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
    more_checkpoints(cluster, job_id, 2)
    produced = feeder.stop()
    time.sleep(1.0)
    more_checkpoints(cluster, job_id, 2)
    exact_output(kafka_bootstrap, out, produced)
