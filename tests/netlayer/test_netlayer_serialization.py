"""Spanning record serialization: round trips across buffer boundaries, dropping partials."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netlayer.serialization import (
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
    # Every buffer but the last is full: records span, they do not leave holes.
    assert all(len(b) - header == buffer_size for b, _ in buffers[:-1])
    # Each record is counted once, in the buffer where it ends.
    assert sum(n for _, n in buffers) == len(recs)


def test_record_of_zero_payload_bytes_and_exact_fit() -> None:
    ser = SpanningRecordSerializer(8)
    assert ser.add(b"") is None  # 4 bytes
    assert ser.add(b"") is None  # 8 bytes: exactly full
    full = ser.add(b"1234")
    assert full == [(bytearray(b"\0\0\0\0\0\0\0\0"), 2)]
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
    ends = set()
    pos = 0
    for r in first:
        pos += 4 + len(orjson.dumps(r))
        ends.add(pos)
    assert deser.clear() == (cut not in ends)  # a partial record exactly when cut mid-record
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


def test_serializer_accounting_helpers() -> None:
    ser = SpanningRecordSerializer(100, header_size=25)
    assert ser.is_empty and ser.pending_bytes == 0
    ser.add(orjson.dumps({"a": 1}))
    assert not ser.is_empty and ser.pending_bytes == 4 + 7
    assert ser.reset() == 1
    assert ser.is_empty
    assert ser.flush() is None
