"""KafkaSource on a real broker: ownership, snapshot/restore, start positions, new partitions."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from streamer.connectors import KafkaSource, SourceRecord
from streamer.errors import ConfigError, ConnectorError
from streamer.testing import TopicFactory, produce_records

pytestmark = pytest.mark.kafka


def drain(source: KafkaSource, expected: int, timeout: float = 30.0) -> list[SourceRecord]:
    """Poll until ``expected`` records came, then 0.5 s more to catch extras."""
    out: list[SourceRecord] = []
    deadline = time.monotonic() + timeout
    while len(out) < expected and time.monotonic() < deadline:
        out.extend(source.poll_batch(500, 0.2))
    settle = time.monotonic() + 0.5
    while time.monotonic() < settle:
        out.extend(source.poll_batch(500, 0.1))
    return out


def fill(bootstrap: str, topic: str, partitions: int, per_partition: int) -> None:
    produce_records(
        bootstrap,
        topic,
        [
            (f"k{p}-{i}", {"p": p, "i": i}, p)
            for p in range(partitions)
            for i in range(per_partition)
        ],
    )


@pytest.mark.parametrize(
    ("serdes", "expected"),
    [
        (  # the default serdes (inlined on the hot path): str keys, JSON values
            {},
            [("k", {"a": [1, "x"]}), (None, None), ("é", "text"), ("", 7)],
        ),
        (  # other serdes go through their deserialize()
            {"key_serde": "bytes", "value_serde": "str"},
            [(b"k", '{"a":[1,"x"]}'), (None, None), ("é".encode(), '"text"'), (b"", "7")],
        ),
    ],
)
def test_records_are_decoded_by_the_serdes_and_counted(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    serdes: dict[str, str],
    expected: list[tuple[Any, Any]],
) -> None:
    topic = kafka_topics.create(1)
    raw = [
        (b"k", b'{"a":[1,"x"]}'),
        (None, None),  # a null key and a tombstone
        ("é".encode(), b'"text"'),
        (b"", b"7"),
    ]
    produce_records(kafka_bootstrap, topic, raw, raw=True)
    source = KafkaSource(kafka_bootstrap, topic, **serdes)  # type: ignore[arg-type]
    source.open()
    try:
        got = drain(source, len(raw))
    finally:
        source.close()
    assert [(r.key, r.value) for r in got] == expected
    assert [r.offset for r in got] == [0, 1, 2, 3]
    assert source.metrics.records_in == 4
    assert source.metrics.bytes_in == sum(len(k or b"") + len(v or b"") for k, v in raw)


@pytest.mark.parametrize(("parallelism", "partitions"), [(1, 1), (2, 4), (3, 8), (4, 3), (5, 2)])
def test_partition_ownership(
    kafka_bootstrap: str, kafka_topics: TopicFactory, parallelism: int, partitions: int
) -> None:
    topic = kafka_topics.create(partitions)
    fill(kafka_bootstrap, topic, partitions, 20)
    seen: dict[tuple[int, int], int] = {}
    for subtask in range(parallelism):
        source = KafkaSource(kafka_bootstrap, topic, subtask=subtask, parallelism=parallelism)
        source.open()
        try:
            owned = [p for p in range(partitions) if p % parallelism == subtask]
            got = drain(source, 20 * len(owned))
            assert sorted({r.partition for r in got}) == owned
            assert source.metrics.partitions == owned
            for r in got:
                assert r.value == {"p": r.partition, "i": r.offset}
                seen[(r.partition, r.offset)] = seen.get((r.partition, r.offset), 0) + 1
        finally:
            source.close()
    assert seen == {(p, i): 1 for p in range(partitions) for i in range(20)}


def test_snapshot_restore_has_no_gap_and_no_duplicate(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(4)
    fill(kafka_bootstrap, topic, 4, 250)
    first = KafkaSource(kafka_bootstrap, topic, subtask=0, parallelism=1)
    first.open()
    before: list[SourceRecord] = []
    while len(before) < 300:
        before.extend(first.poll_batch(37, 0.2))
    snapshot = orjson.loads(orjson.dumps(first.snapshot()))  # as stored in a checkpoint
    first.close()
    assert sum(snapshot["positions"].values()) == len(before)

    second = KafkaSource(kafka_bootstrap, topic, subtask=0, parallelism=1)
    second.restore(snapshot)
    second.open()
    try:
        after = drain(second, 1000 - len(before))
    finally:
        second.close()
    keys = [(r.partition, r.offset) for r in before + after]
    assert len(keys) == 1000
    assert sorted(keys) == [(p, i) for p in range(4) for i in range(250)]


def test_restore_rejects_a_snapshot_of_another_topic(kafka_bootstrap: str) -> None:
    source = KafkaSource(kafka_bootstrap, "a")
    with pytest.raises(ConnectorError, match="snapshot is for topic 'b', not 'a'"):
        source.restore({"topic": "b", "positions": {}})


def test_start_latest_timestamp_and_committed(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(2)
    fill(kafka_bootstrap, topic, 2, 10)
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    produce_records(kafka_bootstrap, topic, [(f"late{i}", {"late": i}, i % 2) for i in range(6)])

    latest = KafkaSource(kafka_bootstrap, topic, start="latest")
    latest.open()
    assert drain(latest, 0) == []
    produce_records(kafka_bootstrap, topic, [("new", {"new": 1}, 0)])
    assert [r.value for r in drain(latest, 1)] == [{"new": 1}]
    latest.close()

    by_time = KafkaSource(kafka_bootstrap, topic, start=cut)
    by_time.open()
    values = sorted(str(r.value) for r in drain(by_time, 7))
    by_time.close()
    assert values == sorted([str({"late": i}) for i in range(6)] + [str({"new": 1})])

    group = f"g-{topic}"
    reader = KafkaSource(kafka_bootstrap, topic, group_id=group)
    reader.open()
    got = drain(reader, 27)
    assert len(got) == 27
    snap = reader.snapshot()
    snap["positions"] = {"0": 5, "1": 5}
    reader.commit_offsets(snap)
    reader.close()  # close() waits for the asynchronous commit
    committed = KafkaSource(kafka_bootstrap, topic, group_id=group, start="committed")
    committed.open()
    rest = drain(committed, 17)
    committed.close()
    assert sorted((r.partition, r.offset) for r in rest) == sorted(
        [(0, o) for o in range(5, 14)] + [(1, o) for o in range(5, 13)]
    )


def test_partitions_that_appear_later(kafka_bootstrap: str, kafka_topics: TopicFactory) -> None:
    topic = kafka_topics.create(2)
    sources = [
        KafkaSource(kafka_bootstrap, topic, subtask=i, parallelism=2, discovery_interval=0.2)
        for i in range(2)
    ]
    for s in sources:
        s.open()
    try:
        kafka_topics.add_partitions(topic, 5)
        produce_records(kafka_bootstrap, topic, [(f"k{p}", {"p": p}, p) for p in range(5)])
        got = [drain(s, n) for s, n in zip(sources, (3, 2), strict=True)]
        assert sorted(r.partition for r in got[0]) == [0, 2, 4]
        assert sorted(r.partition for r in got[1]) == [1, 3]
        assert sources[0].metrics.partitions == [0, 2, 4]
    finally:
        for s in sources:
            s.close()


def test_bounded_source_finishes_at_the_end_seen_at_open(
    kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    topic = kafka_topics.create(3)
    fill(kafka_bootstrap, topic, 3, 7)
    source = KafkaSource(kafka_bootstrap, topic, bounded=True)
    source.open()
    produce_records(kafka_bootstrap, topic, [("after", {"after": True}, 0)])
    got: list[SourceRecord] = []
    deadline = time.monotonic() + 30
    while not source.finished and time.monotonic() < deadline:
        got.extend(source.poll_batch(100, 0.2))
    source.close()
    assert source.finished
    assert len(got) == 21
    assert all(r.value != {"after": True} for r in got)


def test_unknown_topic_and_unreachable_broker(kafka_bootstrap: str) -> None:
    missing = KafkaSource(kafka_bootstrap, "no-such-topic-xyz")
    with pytest.raises(ConnectorError) as info:
        missing.open()
    assert str(info.value) == (
        f"topic 'no-such-topic-xyz' does not exist at {kafka_bootstrap}: create it first "
        "(e.g. kafka-topics.sh --create) or fix the name"
    )
    missing.close()
    nowhere = KafkaSource("127.0.0.1:1", "t", metadata_timeout=2)
    with pytest.raises(ConnectorError, match=r"^cannot reach Kafka at 127.0.0.1:1 within 2 s"):
        nowhere.open()
    nowhere.close()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": "middle"}, "bad start position 'middle'"),
        ({"subtask": 2, "parallelism": 2}, "subtask 2 is outside parallelism 2"),
        ({"on_decode_error": "ignore"}, "unknown on_decode_error 'ignore'"),
        ({"value_serde": "avro"}, "unknown serde 'avro'"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KafkaSource("127.0.0.1:1", "t", **kwargs)
