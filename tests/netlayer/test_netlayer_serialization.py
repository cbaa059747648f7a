"""Spanning record serialization: round trips across buffer boundaries, batches, dropping
partials."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlayer.serialization import (
    BATCH_OVERHEAD,
    RecordDeserializer,
    RecordTooLarge,
    SpanningRecordSerializer,
    length_prefix,
)

pytestmark = pytest.mark.timeout(120)

BUFFER = 64  # small buffers so hypothesis records span 0..several of them

# Records whose JSON is 2 bytes ("{}" / "[]" / '""') up to several buffers long.
records = st.one_of(
    st.text(max_size=BUFFER * 4),
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=60),
    st.dictionaries(st.text(max_size=8), st.text(max_size=30), max_size=8),
)


def serialize_all(
    recs: list[Any], buffer_size: int = BUFFER, header: int = 0
) -> list[tuple[bytearray, int]]:
    ser = SpanningRecordSerializer(buffer_size, header)
    out: list[tuple[bytearray, int]] = []
    for r in recs:
        out += ser.serialize(r) or []
    last = ser.flush()
    if last is not None:
        out.append(last)
    return out


@given(st.lists(records, max_size=40), st.integers(1, 200), st.integers(0, 30))
@settings(max_examples=300, deadline=None)
def test_round_trip(recs: list[Any], buffer_size: int, header: int) -> None:
    buffers = serialize_all(recs, buffer_size, header)
    deser = RecordDeserializer()
    got: list[Any] = []
    for buf, _ in buffers:
        data = buf[header:]
        assert 0 < len(data) <= buffer_size
        got += deser.feed(bytes(data))
    assert got == recs
    assert not deser.has_partial
    # Each record is counted once, in the buffer where it ends.
    assert sum(n for _, n in buffers) == len(recs)
    # A buffer is finished short of full only when the next record did not fit in it.
    sizes = [len(orjson.dumps(r)) for r in recs]
    ended = 0
    for buf, n in buffers[:-1]:
        ended += n
        room = buffer_size - (len(buf) - header)
        if room:
            assert sizes[ended] + BATCH_OVERHEAD > room


def entry_ends(stream: bytes) -> set[int]:
    """Where each entry (a record or a batch) of a serialized stream ends."""
    ends, pos = set(), 0
    while pos < len(stream):
        pos += 4 + (int.from_bytes(stream[pos : pos + 4], "big") & 0x7FFFFFFF)
        ends.add(pos)
    return ends


def test_records_that_fit_travel_as_one_batch() -> None:
    ser = SpanningRecordSerializer(64)
    assert ser.serialize({"a": 1}) is None
    assert ser.serialize([2, None]) is None
    assert ser.records == 2 and ser.pending_bytes == 7 + 1 + 8 + 1
    buf, n = ser.flush() or (bytearray(), 0)
    assert n == 2
    assert bytes(buf) == (0x80000000 | 18).to_bytes(4, "big") + b'[{"a":1},[2,null]]'
    assert RecordDeserializer().feed(bytes(buf)) == [{"a": 1}, [2, None]]
    ser.serialize("alone")
    assert ser.flush() == (bytearray(length_prefix(7) + b'"alone"'), 1)  # a batch of one: plain


def test_a_record_is_encoded_when_added() -> None:
    ser = SpanningRecordSerializer(64)
    record = {"n": 1}
    ser.serialize(record)
    record["n"] = 2  # changed after the emit: what was sent stays
    buf, _ = ser.flush() or (bytearray(), 0)
    assert RecordDeserializer().feed(bytes(buf)) == [{"n": 1}]


def test_record_of_zero_payload_bytes_and_exact_fit() -> None:
    ser = SpanningRecordSerializer(8)
    assert ser.add(b"") is None  # a batch: prefix, "[", "]" = 6 bytes
    assert ser.add(b"") is None  # 7 bytes with its separator
    full = ser.add(b"1234")  # does not fit: the batch is written and its buffer finished
    assert full == [(bytearray(b"\x80\0\0\x03[,]"), 2)]
    assert ser.flush() == (bytearray(b"\0\0\0\x041234"), 1)  # 8 bytes: an exact fit
    deser = RecordDeserializer()
    assert deser.feed(b"\0\0\0\x02[]\0\0\0\x01") == [[]]
    assert deser.has_partial and deser.partial_bytes == 4  # a length prefix, body pending
    assert deser.feed(b"7") == [7]


def test_length_prefix_itself_spans() -> None:
    data = length_prefix(3) + b"123" + length_prefix(2) + b"42"
    deser = RecordDeserializer()
    got: list[Any] = []
    for i in range(0, len(data), 3):  # cut inside both prefixes
        got += deser.feed(data[i : i + 3])
    assert got == [123, 42]


def test_large_record_spans_many_buffers() -> None:
    big = {"blob": "z" * 10_000, "n": list(range(100))}
    buffers = serialize_all([1, big, 2], buffer_size=512)
    assert len(buffers) > 20
    deser = RecordDeserializer()
    got: list[Any] = []
    for buf, _ in buffers:
        got += deser.feed(bytes(buf))
    assert got == [1, big, 2]


@given(st.lists(records, min_size=1, max_size=10), st.lists(records, max_size=10), st.data())
@settings(max_examples=300, deadline=None)
def test_dropped_partial_never_leaks_into_the_next_record(
    first: list[Any], second: list[Any], data: st.DataObject
) -> None:
    """A producer dies mid-stream: clear() and a fresh stream decodes exactly its records."""
    old = b"".join(bytes(b) for b, _ in serialize_all(first))
    cut = data.draw(st.integers(1, len(old)), label="cut")
    deser = RecordDeserializer()
    delivered: list[Any] = []
    for i in range(0, cut, BUFFER):
        delivered += deser.feed(old[i : min(cut, i + BUFFER)])
    assert delivered == first[: len(delivered)]  # only complete records, in order
    # a partial entry exactly when cut mid-entry
    assert deser.clear() == (cut not in entry_ends(old))
    got: list[Any] = []
    for buf, _ in serialize_all(second):
        got += deser.feed(bytes(buf))
    assert got == second


def test_clear_reports_whether_something_was_dropped() -> None:
    deser = RecordDeserializer()
    assert deser.clear() is False
    deser.feed(length_prefix(10) + b"12")
    assert deser.has_partial
    assert deser.clear() is True
    assert not deser.has_partial
    assert deser.feed(length_prefix(1) + b"5") == [5]


def test_oversized_length_prefix_is_rejected_without_allocating() -> None:
    deser = RecordDeserializer(max_record_size=1000)
    with pytest.raises(RecordTooLarge):
        deser.feed(b"\x7f\xff\xff\xff" + b"x")
    assert not deser.has_partial


def test_undecodable_bytes_raise_value_error() -> None:
    with pytest.raises(ValueError):
        RecordDeserializer().feed(length_prefix(3) + b"{{{")


@pytest.mark.parametrize("split", [False, True])
def test_a_batch_entry_that_is_not_an_array_is_refused(split: bool) -> None:
    entry = (0x80000000 | 8).to_bytes(4, "big") + b'{"a": 1}'  # the batch bit on a dict
    deser = RecordDeserializer()
    with pytest.raises(ValueError, match="not an array"):
        if split:  # completed across two buffers
            deser.feed(entry[:6])
            deser.feed(entry[6:])
        else:
            deser.feed(entry)


def test_serializer_accounting_helpers() -> None:
    ser = SpanningRecordSerializer(100, header_size=25)
    assert ser.is_empty and ser.pending_bytes == 0
    ser.add(orjson.dumps({"a": 1}))
    assert not ser.is_empty and ser.pending_bytes == 7 + 1  # batched: bytes and a separator
    assert ser.reset() == 1
    assert ser.is_empty
    assert ser.flush() is None
