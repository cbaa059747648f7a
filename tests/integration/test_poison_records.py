"""Undecodable records under each policy: fail, skip, dead_letter. Nothing is silently lost."""

from __future__ import annotations

import time

import pytest

from streamer.connectors import KafkaSource, SourceRecord
from streamer.errors import ConnectorError
from streamer.testing import TopicFactory, produce_records, read_topic

pytestmark = pytest.mark.kafka

GOOD_BAD_GOOD = [
    (b"a", b'{"n":1}', 0),
    (b"b", b"{not json", 0),
    (b"c", b'{"n":3}', 0),
]


def poll_until(
    source: KafkaSource, n: int, timeout: float = 20.0, dead_lettered: int = 0
) -> list[SourceRecord]:
    """Poll until ``n`` records came and ``dead_lettered`` records were dead-lettered."""
    out: list[SourceRecord] = []
    deadline = time.monotonic() + timeout
    while (
        len(out) < n or source.metrics.records_dead_lettered < dead_lettered
    ) and time.monotonic() < deadline:
        out.extend(source.poll_batch(100, 0.2))
    return out


def test_fail_names_the_record_and_loses_nothing(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(1)
    produce_records(kafka_bootstrap, topic, GOOD_BAD_GOOD, raw=True)
    source = KafkaSource(kafka_bootstrap, topic, on_decode_error="fail")
    source.open()
    got: list[SourceRecord] = []
    with pytest.raises(ConnectorError) as info:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            got.extend(source.poll_batch(100, 0.2))
    assert str(info.value).startswith(
        f"cannot decode the record at topic {topic!r} partition 0 offset 1: "
    )
    assert str(info.value).endswith("set on_decode_error='skip' or 'dead_letter'")
    assert [r.value for r in got] == [{"n": 1}]  # the good record before it was delivered
    assert source.snapshot()["positions"] == {"0": 1}  # the bad record is not skipped
    with pytest.raises(ConnectorError):
        source.poll_batch(100, 0.2)  # and it keeps failing: no silent progress
    source.close()


def test_skip_counts_and_goes_on(kafka_bootstrap: str, kafka_topics: TopicFactory) -> None:
    topic = kafka_topics.create(1)
    produce_records(kafka_bootstrap, topic, GOOD_BAD_GOOD, raw=True)
    source = KafkaSource(kafka_bootstrap, topic, on_decode_error="skip")
    source.open()
    got = poll_until(source, 2)
    assert [r.value for r in got] == [{"n": 1}, {"n": 3}]
    assert source.metrics.records_skipped == 1
    assert source.snapshot()["positions"] == {"0": 3}
    source.close()


def test_dead_letter_keeps_the_raw_record_and_its_origin(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(2)
    dlq = kafka_topics.create(1)
    produce_records(kafka_bootstrap, topic, [*GOOD_BAD_GOOD, (None, b"\xff\xfe", 1)], raw=True)
    source = KafkaSource(
        kafka_bootstrap, topic, on_decode_error="dead_letter", dead_letter_topic=dlq
    )
    source.open()
    # (partition 1's bad record may be fetched after partition 0's good ones: wait for it)
    got = poll_until(source, 2, dead_lettered=2)
    snapshot = source.snapshot()  # flushes the dead letters before positions move past them
    source.close()
    assert [r.value for r in got] == [{"n": 1}, {"n": 3}]
    assert source.metrics.records_dead_lettered == 2
    assert snapshot["positions"] == {"0": 3, "1": 1}
    letters = sorted(
        read_topic(kafka_bootstrap, dlq, expected=2),
        key=lambda r: r.headers["streamer.source.partition"],
    )
    assert [(r.key, r.value) for r in letters] == [(b"b", b"{not json"), (None, b"\xff\xfe")]
    first, second = (r.headers for r in letters)
    assert first["streamer.source.topic"] == topic.encode()
    assert (first["streamer.source.partition"], first["streamer.source.offset"]) == (b"0", b"1")
    assert (second["streamer.source.partition"], second["streamer.source.offset"]) == (b"1", b"0")
    assert first["streamer.error"].startswith(b"JSONDecodeError")


def test_dead_letter_topic_must_exist(kafka_bootstrap: str, kafka_topics: TopicFactory) -> None:
    topic = kafka_topics.create(1)
    source = KafkaSource(kafka_bootstrap, topic, on_decode_error="dead_letter")
    with pytest.raises(ConnectorError, match=f"^topic '{topic}.dlq' does not exist"):
        source.open()
    source.close()


def test_dead_letter_topic_defaults_to_topic_dlq(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(1)
    dlq = kafka_topics.create(1, name=f"{topic}.dlq")
    produce_records(kafka_bootstrap, topic, GOOD_BAD_GOOD, raw=True)
    source = KafkaSource(kafka_bootstrap, topic, on_decode_error="dead_letter")
    source.open()
    assert [r.value for r in poll_until(source, 2)] == [{"n": 1}, {"n": 3}]
    source.close()
    [letter] = read_topic(kafka_bootstrap, dlq, expected=1)
    assert (letter.key, letter.value) == (b"b", b"{not json")
    assert letter.headers["streamer.source.offset"] == b"1"


def test_dead_letters_are_at_least_once_across_a_restart(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """A restarted source reads again from its checkpoint and dead-letters the same
    record again: the README and the dead_letter module say so; the headers tell the
    copies apart from two bad records."""
    topic = kafka_topics.create(1)
    dlq = kafka_topics.create(1)
    produce_records(kafka_bootstrap, topic, GOOD_BAD_GOOD, raw=True)
    first = KafkaSource(
        kafka_bootstrap, topic, on_decode_error="dead_letter", dead_letter_topic=dlq
    )
    first.open()
    checkpoint = first.snapshot()  # taken before the bad record was read
    assert len(poll_until(first, 2)) == 2
    first.close()  # the dead letter is stored; then the task "dies" before a checkpoint
    second = KafkaSource(
        kafka_bootstrap, topic, on_decode_error="dead_letter", dead_letter_topic=dlq
    )
    second.restore(checkpoint)
    second.open()
    assert [r.value for r in poll_until(second, 2)] == [{"n": 1}, {"n": 3}]
    second.close()
    letters = read_topic(kafka_bootstrap, dlq, expected=2)
    assert len(letters) == 2
    origins = {
        (r.headers["streamer.source.topic"], r.headers["streamer.source.partition"],
         r.headers["streamer.source.offset"])
        for r in letters
    }  # fmt: skip
    assert origins == {(topic.encode(), b"0", b"1")}  # one record, twice
