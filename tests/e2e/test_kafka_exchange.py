"""The ``kafka`` exchange (FLIP-1's persisted exchange) end to end.

The job is ``examples.kafka_exchange``: events x2 -hash-> tag x3 =kafka, hash=>
count x4 -rebalance-> sink x2, with checkpoints every 0.5 s and an exactly-once
sink. The exchange cuts two pipelined regions, ``events``+``tag`` and
``count``+``sink``. A read-committed checker (every ``(key, seq)`` exactly once,
every running count exact) decides.
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

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

PRODUCER_SIDE = sorted([f"events#{i}" for i in range(2)] + [f"tag#{i}" for i in range(3)])
CONSUMER_SIDE = sorted([f"count#{i}" for i in range(4)] + [f"sink#{i}" for i in range(2)])


def submit(
    cluster: LocalCluster, bootstrap: str, topics: TopicFactory, strategy: str, **params: str
) -> tuple[str, str, str]:
    src, out = topics.create(4), topics.create(2)
    exchange = topics.create(4)  # one partition per count subtask
    job_id = cluster.submit(
        "examples.kafka_exchange:job",
        {
            "strategy": strategy,
            "bootstrap_servers": bootstrap,
            "metrics_interval": 0.5,
            "checkpoint_interval": 0.5,
            "checkpoint_dir": str(cluster.work_dir / "checkpoints"),
            "params": {"in": src, "out": out, "exchange": exchange, **params},
        },
    )
    cluster.wait_for(job_id, all_running, what="all running")
    return job_id, src, out


def recovered(n: int) -> Any:
    def check(s: Status) -> bool:
        f = s["failovers"]
        return len(f) >= n and f[n - 1]["status"] == "done" and all_running(s)

    return check


def stop_and_check_exact(
    cluster: LocalCluster, job_id: str, feeder: EventFeeder, bootstrap: str, out: str
) -> Status:
    """Stop the input once two more checkpoints completed, let three more carry the
    rest across the exchange and commit it, and check the output exactly."""
    more_checkpoints(cluster, job_id, 2)
    produced = feeder.stop()
    time.sleep(1.0)
    status = more_checkpoints(cluster, job_id, 3)
    expected = sum(produced.values())
    outputs = [
        orjson.loads(r.value)  # type: ignore[arg-type]
        for r in read_topic(bootstrap, out, expected=expected, timeout=60, idle=3.0)
    ]
    report = check_sequences(produced, outputs)
    assert report.exact, report.summary()
    assert len(outputs) == expected
    return status


def attempts(status: Status) -> dict[str, int]:
    return {t["task"]: t["attempt"] for t in status["tasks"]}


def test_a_region_restart_stops_at_the_topic(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """Killing a task on either side restarts only that side's region; exact output."""
    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics, "region")
    feeder = EventFeeder(kafka_bootstrap, src, rate=300, keys=32).start()
    for n, (victim, region) in enumerate(
        [("tag#1", PRODUCER_SIDE), ("count#2", CONSUMER_SIDE)], start=1
    ):
        more_checkpoints(cluster, job_id, 2)
        cluster.kill_task(job_id, victim)
        status = cluster.wait_for(job_id, recovered(n), what=f"recovery of {victim}")
        rec = status["failovers"][n - 1]
        assert rec["tasks_restarted"] == region and not rec["fell_back"], rec
    status = stop_and_check_exact(cluster, job_id, feeder, kafka_bootstrap, out)
    assert attempts(status) == {t: 1 for t in PRODUCER_SIDE + CONSUMER_SIDE}


def test_single_tasks_on_both_sides_recover_alone_and_exactly(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """Lossless individual recovery: the exchange's producer (tag) recovers like an
    exactly-once sink, its consumer (count) like a source; the others keep running."""
    job_id, src, out = submit(cluster, kafka_bootstrap, kafka_topics, "individual")
    feeder = EventFeeder(kafka_bootstrap, src, rate=300, keys=32).start()
    victims = ["tag#1", "count#2", "events#0", "sink#1", "count#0"]
    for n, victim in enumerate(victims, start=1):
        more_checkpoints(cluster, job_id, 2)
        cluster.kill_task(job_id, victim)
        status = cluster.wait_for(job_id, recovered(n), what=f"recovery of {victim}")
        rec = status["failovers"][n - 1]
        assert rec["tasks_restarted"] == [victim] and not rec["fell_back"], rec
    status = stop_and_check_exact(cluster, job_id, feeder, kafka_bootstrap, out)
    killed = Counter(victims)
    assert attempts(status) == {t: killed[t] for t in PRODUCER_SIDE + CONSUMER_SIDE}


def test_event_time_and_the_end_of_input_cross_the_exchange(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """A bounded job: the producers' watermarks reach the counters through the topic,
    and their end markers end the consumer side, which finishes the job."""
    src = kafka_topics.create(4)
    feeder = EventFeeder(kafka_bootstrap, src, rate=2000, keys=16).start()
    time.sleep(1.0)
    produced = feeder.stop()
    out, exchange = kafka_topics.create(2), kafka_topics.create(4)
    job_id = cluster.submit(
        "examples.kafka_exchange:job",
        {
            "strategy": "region",
            "bootstrap_servers": kafka_bootstrap,
            "metrics_interval": 0.2,
            "checkpoint_interval": 0.5,
            "checkpoint_dir": str(cluster.work_dir / "checkpoints"),
            "params": {
                "in": src,
                "out": out,
                "exchange": exchange,
                "bounded": "1",
                "event_time": "100",
            },
        },
    )
    watermarks: dict[str, int] = {}

    def finished(s: Status) -> bool:
        for t in s["tasks"]:
            wm = (t.get("metrics") or {}).get("watermark")
            if wm is not None and t["task"].startswith("count"):
                watermarks[t["task"]] = wm
        return bool(s["state"] == "FINISHED")

    cluster.wait_for(job_id, finished, timeout=120, what="the bounded job's end")
    outputs = [
        orjson.loads(r.value)  # type: ignore[arg-type]
        for r in read_topic(kafka_bootstrap, out, expected=sum(produced.values()), timeout=30)
    ]
    report = check_sequences(produced, outputs)
    assert report.exact, report.summary()
    assert set(watermarks) == {f"count#{i}" for i in range(4)}, watermarks
    assert all(wm > 0 for wm in watermarks.values()), watermarks


def test_jobs_the_exchange_cannot_run_are_refused_in_one_line(cluster: LocalCluster) -> None:
    with pytest.raises(Exception, match="savepoints of a job with a kafka exchange") as info:
        cluster.submit(
            "examples.kafka_exchange:job",
            {"from_savepoint": "sp", "checkpoint_interval": 1.0},
        )
    assert "\n" not in str(info.value)
