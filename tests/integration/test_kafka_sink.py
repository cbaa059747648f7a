"""KafkaSink against a real broker: at-least-once, transactions, fencing, held records."""

from __future__ import annotations

import orjson
import pytest

from streamer.connectors import KafkaSink
from streamer.errors import ConnectorError
from streamer.testing import TopicFactory, read_topic

pytestmark = pytest.mark.kafka


def values(bootstrap: str, topic: str, **kwargs: object) -> list[object]:
    return [orjson.loads(r.value) for r in read_topic(bootstrap, topic, **kwargs)]  # type: ignore[arg-type]


def test_at_least_once_flushes_on_prepare_commit(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(3)
    sink = KafkaSink(kafka_bootstrap, topic)
    sink.open()
    for i in range(500):
        sink.write({"i": i}, key=f"k{i}")
    sink.prepare_commit(1)
    got = read_topic(kafka_bootstrap, topic, expected=500, idle=0.3)
    sink.close()
    assert sorted(orjson.loads(r.value)["i"] for r in got) == list(range(500))  # type: ignore[arg-type]
    assert sink.metrics.records_out == 500


def test_aborted_is_invisible_and_committed_is_visible_once(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(2)
    sink = KafkaSink(kafka_bootstrap, topic, job="j", vertex="v", delivery="exactly_once")
    sink.open()
    for i in range(50):
        sink.write({"epoch": 1, "i": i})
    sink.prepare_commit(1)
    sink.abort()  # a failure: the records of epoch 1 are replayed from the checkpoint
    for i in range(30):
        sink.write({"epoch": 2, "i": i})
    sink.prepare_commit(2)
    sink.commit(2)
    sink.close()
    committed = values(kafka_bootstrap, topic, expected=30, idle=1.0)
    assert sorted(v["i"] for v in committed) == list(range(30))  # type: ignore[index]
    assert {v["epoch"] for v in committed} == {2}  # type: ignore[index]
    raw = read_topic(kafka_bootstrap, topic, read_committed=False, expected=80, idle=0.5)
    assert len(raw) == 80  # the aborted records are in the log, just never visible
    assert sink.metrics.transactions_committed == 1
    assert sink.metrics.transactions_aborted == 1


def test_records_after_prepare_wait_for_the_next_transaction(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(1)
    sink = KafkaSink(kafka_bootstrap, topic, job="j2", vertex="v", delivery="exactly_once")
    sink.open()
    sink.write({"e": 1})
    sink.prepare_commit(1)
    sink.write({"e": 2})  # after the barrier of epoch 1: belongs to epoch 2
    sink.prepare_commit(2)  # epoch 1 is not committed yet
    sink.write({"e": 3})
    assert values(kafka_bootstrap, topic, idle=0.5) == []
    sink.commit(1)
    assert values(kafka_bootstrap, topic, expected=1, idle=0.5) == [{"e": 1}]
    sink.commit(2)
    assert values(kafka_bootstrap, topic, expected=2, idle=0.5) == [{"e": 1}, {"e": 2}]
    sink.prepare_commit(3)
    sink.commit(3)
    sink.close()
    assert values(kafka_bootstrap, topic, expected=3, idle=0.5) == [{"e": 1}, {"e": 2}, {"e": 3}]


@pytest.mark.parametrize(
    ("serdes", "writes", "expected"),
    [
        (  # the default serdes (inlined on the hot path): str keys, JSON values
            {},
            [({"a": 1}, "k"), ({"b": [1, 2]}, 7), (None, b"raw"), ("x", None)],
            [(b"k", b'{"a":1}'), (b"7", b'{"b":[1,2]}'), (b"raw", None), (None, b'"x"')],
        ),
        (  # other serdes go through their serialize()
            {"key_serde": "bytes", "value_serde": "str"},
            [("text", b"kb"), (5, None)],
            [(b"kb", b"text"), (None, b"5")],
        ),
    ],
)
def test_records_are_encoded_by_the_serdes(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    serdes: dict[str, str],
    writes: list[tuple[object, object]],
    expected: list[tuple[bytes | None, bytes | None]],
) -> None:
    topic = kafka_topics.create(1)
    sink = KafkaSink(kafka_bootstrap, topic, **serdes)  # type: ignore[arg-type]
    sink.open()
    for value, key in writes:
        sink.write(value, key)
    sink.close()
    got = read_topic(kafka_bootstrap, topic, expected=len(expected), idle=0.5)
    assert [(r.key, r.value) for r in got] == expected


def test_a_later_commit_covers_earlier_sealed_epochs(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(1)
    sink = KafkaSink(kafka_bootstrap, topic, job="j3", vertex="v", delivery="exactly_once")
    sink.open()
    sink.write({"e": 1})
    sink.prepare_commit(1)
    sink.write({"e": 2})
    sink.prepare_commit(2)
    sink.write({"e": 3})
    sink.commit(2)  # the notification for 1 was lost; 2 completing covers it
    assert values(kafka_bootstrap, topic, expected=2, idle=0.5) == [{"e": 1}, {"e": 2}]
    sink.commit(1)  # late and harmless
    sink.close()  # aborts the open transaction holding {"e": 3}
    assert values(kafka_bootstrap, topic, expected=2, idle=0.5) == [{"e": 1}, {"e": 2}]


def test_a_restarted_attempt_fences_the_old_one(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(1)
    old = KafkaSink(
        kafka_bootstrap, topic, job="job", vertex="sink", subtask=3, delivery="exactly_once"
    )
    old.open()
    old.write({"attempt": 0})
    old.prepare_commit(1)
    new = KafkaSink(
        kafka_bootstrap, topic, job="job", vertex="sink", subtask=3, delivery="exactly_once"
    )
    assert new.transactional_id == old.transactional_id == f"streamer-job-sink-3-{topic}"
    new.open()  # fences attempt 0 and aborts its open transaction
    with pytest.raises(ConnectorError, match="was fenced by a newer attempt"):
        old.commit(1)
    new.write({"attempt": 1})
    new.prepare_commit(1)
    new.commit(1)
    new.close()
    assert values(kafka_bootstrap, topic, expected=1, idle=1.0) == [{"attempt": 1}]


def test_a_failed_delivery_is_an_error_though_successes_make_no_callback(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(2, config={"max.message.bytes": "200000"})
    sink = KafkaSink(kafka_bootstrap, topic)
    sink.open()
    for i in range(3000):  # crosses the poll interval: successes are not reported
        sink.write({"i": i}, key=f"k{i}")
    sink.prepare_commit(1)
    assert len(read_topic(kafka_bootstrap, topic, expected=3000, idle=0.3)) == 3000
    sink.write({"blob": "x" * 300_000})  # the broker refuses it (the client cannot know)
    with pytest.raises(ConnectorError, match=rf"^sink could not deliver to topic '{topic}': "):
        sink.prepare_commit(2)
    with pytest.raises(ConnectorError, match=r"^sink cannot write to topic .*: partition 7 "):
        sink.write({"i": -1}, partition=7)  # the topic has 2 partitions
    sink.close()


def test_same_named_jobs_writing_other_topics_do_not_fence_each_other(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    first, second = kafka_topics.create(1), kafka_topics.create(1)
    sinks = [
        KafkaSink(kafka_bootstrap, t, job="job", vertex="sink", subtask=0, delivery="exactly_once")
        for t in (first, second)
    ]
    for sink in sinks:
        sink.open()
    for round_ in (1, 2):  # interleaved transactions: neither producer is fenced
        for sink in sinks:
            sink.write({"round": round_})
            sink.prepare_commit(round_)
            sink.commit(round_)
    for sink, topic in zip(sinks, (first, second), strict=True):
        got = values(kafka_bootstrap, topic, expected=2, idle=0.3)
        assert got == [{"round": 1}, {"round": 2}]
        sink.close()


def test_sink_to_unknown_topic_is_a_clear_error(kafka_bootstrap: str) -> None:
    sink = KafkaSink(kafka_bootstrap, "missing-topic-abc")
    with pytest.raises(ConnectorError, match=r"^topic .missing-topic-abc. does not exist at"):
        sink.open()


def test_commit_markers_say_which_epochs_committed(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(1)  # one partition: the read order is the write order
    job = f"markers-{topic}"
    sink = KafkaSink(
        kafka_bootstrap, topic, job=job, vertex="v", delivery="exactly_once", run_id="run1"
    )
    sink.open()
    assert sink.committed_epoch() == 0
    sink.write({"e": 1})
    sink.prepare_commit(1)
    sink.commit(1)
    assert sink.committed_epoch() == 1
    sink.write({"e": 2})
    sink.prepare_commit(2)
    sink.write({"e": 3})
    sink.prepare_commit(3)
    sink.commit(3)  # commits the transactions of 2 and 3
    assert sink.committed_epoch() == 3
    sink.write({"e": 4})
    sink.prepare_commit(4)
    sink.abort()  # the marker of 4 is aborted with its records
    assert sink.committed_epoch() == 3
    sink.close()
    assert values(kafka_bootstrap, topic, expected=3, idle=0.5) == [{"e": 1}, {"e": 2}, {"e": 3}]
    other_run = KafkaSink(
        kafka_bootstrap, topic, job=job, vertex="v", delivery="exactly_once", run_id="run2"
    )
    other_run.open()  # another run of the job (say, from a savepoint) has its own markers
    assert other_run.committed_epoch() == 0
    other_run.close()


def test_a_commit_by_an_attempt_that_died_is_seen_by_the_next(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(1)
    job = f"died-{topic}"
    old = KafkaSink(kafka_bootstrap, topic, job=job, vertex="sink", delivery="exactly_once")
    old.open()
    old.write({"attempt": 0})
    old.prepare_commit(5)
    old.commit(5)
    old.write({"attempt": 0, "after": 5})  # in the next transaction, never committed
    # the old attempt dies here: never closed, and nobody hears of its commit of 5
    new = KafkaSink(kafka_bootstrap, topic, job=job, vertex="sink", delivery="exactly_once")
    new.open()  # fences the old attempt, aborting its open transaction
    assert new.committed_epoch() == 5
    new.close()
    assert values(kafka_bootstrap, topic, expected=1, idle=1.0) == [{"attempt": 0}]


def test_committed_epoch_needs_an_exactly_once_sink(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    sink = KafkaSink(kafka_bootstrap, kafka_topics.create(1))
    sink.open()
    with pytest.raises(ConnectorError, match="has no commit markers"):
        sink.committed_epoch()
    sink.close()
