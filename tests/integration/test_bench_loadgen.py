"""The benchmarks' one produce path (``streamer.bench.loadgen``) against a real broker:
the order join's feeder writes every generated event once, in event-time order, and
records what the join benchmarks measure from; the rate feeder stores a produce time
for every record. No timings are asserted."""

from __future__ import annotations

import itertools
from pathlib import Path

import orjson
import pytest

from examples.order_join import TOPICS, _interleaved, generate_events
from streamer.bench.loadgen import OrderFeeder, event_bytes, feed, load_array, read_all
from streamer.testing import TopicFactory

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def test_order_feeder_writes_every_event_once_in_event_time_order(kafka_bootstrap: str) -> None:
    events = generate_events(60, seed=3, rate=200.0)
    with TopicFactory(kafka_bootstrap, prefix="loadgen") as topics:
        names = {t: topics.create(2) for t in TOPICS}
        feeder = OrderFeeder(kafka_bootstrap, names, events)
        before = feeder.started_at
        feeder.start()
        feeder.join(60)
        assert not feeder.is_alive() and feeder.error is None
        assert feeder.started.is_set() and feeder.started_at > before
        assert feeder.failed_deliveries == 0
        in_order = list(_interleaved(events))  # by event time, across the topics
        assert feeder.produced == {t: [e for u, e in in_order if u == t] for t in TOPICS}
        last = {e["order_id"]: e for _, e in in_order}  # each order's last piece
        assert set(feeder.last_piece_at) == set(last)
        assert set(feeder.partition_of) == {e["order_id"] for e in events["orders"]}
        assert set(feeder.partition_of.values()) <= {0, 1}
        for topic in TOPICS:
            got = read_all(kafka_bootstrap, names[topic], expected=len(events[topic]),
                           idle=0.5, timeout=30)  # fmt: skip
            assert sorted(orjson.loads(v)["order_id"] for v, _ in got) == sorted(
                e["order_id"] for e in events[topic]
            )


def test_rate_feeder_stores_a_produce_time_per_record(kafka_bootstrap: str, tmp_path: Path) -> None:
    with TopicFactory(kafka_bootstrap, prefix="loadgen") as topics:
        topic = topics.create(2)
        result = feed(kafka_bootstrap, topic, 2000.0, 500, tmp_path / "times")
        assert result["produced"] == 500
        times = load_array(tmp_path / "times", "d")
        assert len(times) == 500 and all(a <= b for a, b in itertools.pairwise(times))
        got = read_all(kafka_bootstrap, topic, expected=500, idle=0.5, timeout=30)
        assert sorted(v for v, _ in got) == sorted(event_bytes(i) for i in range(500))
