"""The multi-stream interval join against its oracle, across a SIGKILL under each strategy.

Orders, payments and shipments (out of order within a bounded window) stream in
while a join task is killed. Under ``full`` and ``region`` (checkpoints plus the
exactly-once sink) the committed output is exactly the oracle's set of complete
orders, each once. Under ``individual`` nothing is duplicated and every missing
order belongs to the killed task's key groups. Under lossless ``individual``
(``individual_recovery=lossless``) the killed join task recovers alone and the
output is exactly the oracle's, as under ``full``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from examples.order_join import TOPICS, _interleaved, expected_results, generate_events
from streamer.graph import subtask_for_key
from streamer.testing import TopicFactory, read_topic
from streamer.testing.cluster import LocalCluster, Status, all_running

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

ORDERS = 1500
RATE = 250.0  # orders per second of event time, replayed at that speed


def feed(bootstrap: str, topics: dict[str, str], events: dict[str, list[dict[str, Any]]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    started = time.monotonic()
    base = min(e["ts"] for e in events["orders"])
    for topic, event in _interleaved(events):
        producer.produce(topics[topic], orjson.dumps(event), key=event["order_id"].encode())
        producer.poll(0)
        delay = started + (event["ts"] - base) / 1000.0 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    assert producer.flush(30) == 0


def failover_done(s: Status) -> bool:
    return bool(s["failovers"]) and s["failovers"][0]["status"] == "done" and all_running(s)


@pytest.mark.parametrize("strategy", ["full", "region", "individual", "lossless"])
def test_join_matches_the_oracle_across_a_restart(
    strategy: str, cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topics = {t: kafka_topics.create(4) for t in TOPICS}
    out = kafka_topics.create(2)
    events = generate_events(ORDERS, seed=11, rate=RATE)
    oracle = expected_results(events)
    assert 0.9 * ORDERS < len(oracle) < ORDERS  # a few orders never complete
    job_id = cluster.submit(
        "examples.order_join:job",
        {
            "strategy": "individual" if strategy == "lossless" else strategy,
            "individual_recovery": "lossless" if strategy == "lossless" else "lossy",
            "bootstrap_servers": kafka_bootstrap,
            "checkpoint_interval": 0.4,
            "checkpoint_dir": str(cluster.work_dir / "checkpoints"),
            "metrics_interval": 0.5,
            "params": {**topics, "out": out, "parallelism": "4", "delivery": "exactly_once"},
        },
    )
    cluster.wait_for(job_id, all_running, what="all running")
    feeder = threading.Thread(target=feed, args=(kafka_bootstrap, topics, events), daemon=True)
    feeder.start()
    cluster.wait_for(job_id, lambda s: s["checkpoints"]["completed"] >= 3, what="checkpoints")
    cluster.kill_task(job_id, "join#1")
    cluster.wait_for(job_id, failover_done, what="failover done")
    feeder.join(timeout=60)
    assert not feeder.is_alive()

    if strategy == "individual":
        time.sleep(1.5)  # let the last records through, then two more commits
        done = cluster.status(job_id)["checkpoints"]["completed"]
        cluster.wait_for(
            job_id, lambda s: s["checkpoints"]["completed"] >= done + 2, what="final commits"
        )
        records = read_topic(kafka_bootstrap, out, timeout=60, idle=2.0)
    else:
        records = read_topic(kafka_bootstrap, out, expected=len(oracle), timeout=90, idle=2.0)
    ids = Counter(orjson.loads(r.value)["order_id"] for r in records)  # type: ignore[arg-type]
    assert max(ids.values()) == 1, "no order is emitted twice"
    assert set(ids) <= oracle, "nothing outside the oracle"
    missing = oracle - set(ids)
    status = cluster.status(job_id)
    if strategy == "individual":
        by_task = Counter(subtask_for_key(oid, 128, 4) for oid in missing)
        assert set(by_task) <= {1}, (
            f"missing per join task {dict(by_task)}; last ids "
            f"{sorted(missing)[-5:]}; checkpoints {status['checkpoints']['history'][-6:]}; "
            f"failover {status['failovers'][0]}"
        )
    else:
        assert missing == set()
    if strategy == "lossless":  # the join alone recovered, exactly
        rec = status["failovers"][0]
        assert rec["tasks_restarted"] == ["join#1"] and not rec["fell_back"], rec
    join_metrics = [t["metrics"] for t in status["tasks"] if t["vertex"] == "join"]
    assert all(m.get("records_processed", 0) > 0 for m in join_metrics)
