"""The sans-io frame codec: round trips, and garbage always ends in a ProtocolError."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netlayer.events import (
    CheckpointBarrier,
    EndOfPartition,
    Watermark,
    decode_event,
    encode_event,
)
from netlayer.protocol.codec import (
    FrameDecoder,
    encode,
    encode_event_frame,
    finish_buffer_frame,
    restamp_event_frame,
)
from netlayer.protocol.errors import FrameTooLarge, ProtocolError
from netlayer.protocol.frames import (
    BUFFER_FRAME_HEADER_SIZE,
    FRAME_HEADER_SIZE,
    MAGIC,
    MAX_U32,
    MAX_U64,
    AddCredit,
    Buffer,
    Close,
    Error,
    Event,
    FrameType,
    Message,
    PartitionRequest,
    PartitionResponse,
)

pytestmark = pytest.mark.timeout(120)

u32 = st.integers(0, MAX_U32)
u64 = st.integers(0, MAX_U64)
text = st.text(max_size=40)
blob = st.binary(max_size=300)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(PartitionRequest, text, u32, u32, u32, st.none() | u64),
    st.builds(PartitionResponse, text, u32, u32),
    st.builds(AddCredit, u32),
    st.builds(Buffer, u64, u32, blob),
    st.builds(Event, u64, st.integers(0, 255), blob),
    st.builds(Error, text),
    st.builds(Close, text),
)


def decode_all(
    data: bytes, chunks: list[int] | None = None, max_frame: int = 1 << 16
) -> list[Message]:
    """Feed ``data`` in chunks of the given sizes (then the rest), then signal EOF."""
    dec = FrameDecoder(max_frame)
    out: list[Message] = []
    pos = 0
    for size in chunks or []:
        out += dec.feed(data[pos : pos + size])
        assert dec.buffered < max_frame
        pos += size
    out += dec.feed(data[pos:])
    dec.eof()
    return out


@given(st.lists(messages, max_size=8), st.lists(st.integers(0, 64), max_size=30))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_in_any_chunking(msgs: list[Message], chunks: list[int]) -> None:
    data = b"".join(encode(m) for m in msgs)
    assert decode_all(data, chunks) == msgs


@pytest.mark.parametrize(
    "msg",
    [
        PartitionRequest("job/v#0/e", 3, 7, 8),
        PartitionRequest("job/v#0/e", 3, 7, 8, replay_from=42),
        PartitionRequest("", 0, 0, 0, replay_from=MAX_U64),
        PartitionResponse("job/v#0/e", 3, 2),
        AddCredit(5),
        Buffer(0, 0, b""),
        Buffer(MAX_U64, MAX_U32, b"x" * 1000),
        Event(1, 2, b"abc"),
        Error("boom \u2603"),
        Close(),
        Close("done"),
    ],
)
def test_every_frame_type_round_trips(msg: Message) -> None:
    frame = encode(msg)
    assert frame[4:8] == MAGIC
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert decode_all(frame) == [msg]


@given(u64, u32, blob)
@settings(deadline=None)
def test_in_place_buffer_frame_equals_encode(seq: int, backlog: int, data: bytes) -> None:
    frame = bytearray(BUFFER_FRAME_HEADER_SIZE) + data
    finish_buffer_frame(frame, seq, backlog)
    assert bytes(frame) == encode(Buffer(seq, backlog, data))
    finish_buffer_frame(frame, 0, 1)  # a replay renumbers a finished frame the same way
    assert bytes(frame) == encode(Buffer(0, 1, data))


@given(u64, u64, st.integers(0, 255), blob)
@settings(deadline=None)
def test_restamped_event_frame_equals_encode(old: int, seq: int, kind: int, data: bytes) -> None:
    frame = bytearray(encode_event_frame(old, kind, data))
    restamp_event_frame(frame, seq)
    assert bytes(frame) == encode(Event(seq, kind, data))


@given(
    st.lists(messages, min_size=1, max_size=5),
    st.data(),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_corruption_is_a_protocol_error(msgs: list[Message], data: st.DataObject) -> None:
    stream = bytearray(b"".join(encode(m) for m in msgs))
    pos = data.draw(st.integers(0, len(stream) - 1), label="position")
    flip = data.draw(st.integers(1, 255), label="xor")
    stream[pos] ^= flip
    chunks = data.draw(st.lists(st.integers(0, 50), max_size=10), label="chunks")
    with pytest.raises(ProtocolError):
        decode_all(bytes(stream), chunks)


def _boundaries(msgs: list[Message]) -> set[int]:
    out, pos = {0}, 0
    for m in msgs:
        pos += len(encode(m))
        out.add(pos)
    return out


@given(st.lists(messages, min_size=1, max_size=5), st.data())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_truncation_inside_a_frame_is_a_protocol_error(
    msgs: list[Message], data: st.DataObject
) -> None:
    stream = b"".join(encode(m) for m in msgs)
    bounds = _boundaries(msgs)
    cut = data.draw(st.integers(1, len(stream) - 1).filter(lambda c: c not in bounds))
    with pytest.raises(ProtocolError, match="truncated"):
        decode_all(stream[:cut])


@given(st.binary(min_size=1, max_size=200))
@settings(deadline=None)
def test_random_garbage_never_decodes_silently(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_all(garbage)


def test_oversized_frame_rejected_from_its_length_alone() -> None:
    dec = FrameDecoder(max_frame_size=1024)
    with pytest.raises(FrameTooLarge):
        dec.feed(struct.pack(">I", 5000))  # only the length: no allocation, no wait
    with pytest.raises(ProtocolError, match="already failed"):
        dec.feed(b"more")


def test_huge_declared_length_never_allocated() -> None:
    dec = FrameDecoder(max_frame_size=1 << 20)
    with pytest.raises(FrameTooLarge):
        dec.feed(b"\xff\xff\xff\xff" + MAGIC)
    assert dec.buffered == 0


def test_bad_magic_rejected_before_the_frame_is_complete() -> None:
    dec = FrameDecoder()
    with pytest.raises(ProtocolError, match="bad magic"):
        dec.feed(struct.pack(">I", 500) + b"HTTP")


def test_other_protocol_version_rejected() -> None:
    frame = bytearray(encode(AddCredit(1)))
    frame[7] = 99
    with pytest.raises(ProtocolError, match="version 99"):
        FrameDecoder().feed(bytes(frame))


def test_unknown_type_rejected() -> None:
    payload = b"abc"
    frame = struct.pack(">I4sBI", len(payload) + 9, MAGIC, 99, zlib.crc32(payload)) + payload
    with pytest.raises(ProtocolError, match="unknown frame type 99"):
        FrameDecoder().feed(frame)


def test_length_shorter_than_header_rejected() -> None:
    with pytest.raises(ProtocolError, match="shorter"):
        FrameDecoder().feed(struct.pack(">I", 3) + b"abc")


def _with_crc(ftype: FrameType, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes([ftype])))
    return struct.pack(">I4sBI", len(payload) + 9, MAGIC, ftype, crc) + payload


@pytest.mark.parametrize(
    ("ftype", "payload", "match"),
    [
        (FrameType.ADD_CREDIT, b"\x00\x01", "4 bytes"),
        (FrameType.BUFFER, b"\x00" * 5, "truncated Buffer"),
        (FrameType.EVENT, b"\x00" * 3, "truncated Event"),
        (FrameType.PARTITION_REQUEST, b"\x00" * 28 + b"\x00\x05ab", "string length"),
        (FrameType.PARTITION_REQUEST, b"\x00" * 28 + b"\x00\x01a" + b"\x00" * 3, "string length"),
        (FrameType.PARTITION_REQUEST, b"\x00" * 16, "truncated PartitionRequest"),
        (FrameType.PARTITION_RESPONSE, b"\x00" * 3, "truncated PartitionResponse"),
        (FrameType.ERROR, b"\xff\xfe", "UTF-8"),
    ],
)
def test_well_framed_but_invalid_payloads(ftype: FrameType, payload: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        FrameDecoder().feed(_with_crc(ftype, payload))


def test_the_partition_request_layout_with_token_and_optional_replay_from() -> None:
    token = bytes(range(16))
    payload = struct.pack(">III", 3, 7, 8) + token + struct.pack(">H", 9) + b"job/v#0/e"
    plain = _with_crc(FrameType.PARTITION_REQUEST, payload)
    assert encode(PartitionRequest("job/v#0/e", 3, 7, 8, token=token)) == plain
    assert decode_all(plain) == [PartitionRequest("job/v#0/e", 3, 7, 8, None, token)]
    replay = _with_crc(FrameType.PARTITION_REQUEST, payload + struct.pack(">Q", 5))
    assert encode(PartitionRequest("job/v#0/e", 3, 7, 8, replay_from=5, token=token)) == replay


def test_a_token_must_be_16_bytes() -> None:
    with pytest.raises(ValueError, match="token of 3 bytes"):
        encode(PartitionRequest("x", 0, 0, 0, token=b"abc"))


def test_encode_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError):
        encode(AddCredit(-1))
    with pytest.raises(ValueError):
        encode(Buffer(MAX_U64 + 1, 0, b""))
    with pytest.raises(ValueError):
        encode(PartitionRequest("x" * 70000, 0, 0, 0))
    with pytest.raises(ValueError):
        encode(PartitionRequest("x", 0, 0, 0, replay_from=-1))


def test_decoder_holds_at_most_one_partial_frame() -> None:
    frames = b"".join(encode(Buffer(i, 0, b"y" * 900)) for i in range(20))
    dec = FrameDecoder(max_frame_size=1000)
    got: list[Message] = []
    for i in range(0, len(frames), 777):
        got += dec.feed(frames[i : i + 777])
        assert dec.buffered < 1000
    dec.eof()
    assert [m.seq for m in got if isinstance(m, Buffer)] == list(range(20))
    assert FRAME_HEADER_SIZE == 13


@pytest.mark.parametrize(
    "event", [CheckpointBarrier(7, 123), Watermark(-5), Watermark(2**62), EndOfPartition()]
)
def test_events_round_trip(event: CheckpointBarrier | Watermark | EndOfPartition) -> None:
    kind, payload = encode_event(event)
    assert decode_event(kind, payload) == event


def test_bad_events_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError, match="unknown event kind"):
        decode_event(42, b"")
    with pytest.raises(ProtocolError):
        decode_event(1, b"\x00")
    with pytest.raises(ProtocolError):
        decode_event(3, b"x")
