"""The control plane's sans-io codec and message registry (streamer.rpc)."""

from __future__ import annotations

import struct
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.rpc import (
    DEFAULT_MAX_FRAME_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    REGISTRY,
    Message,
    Registry,
    RpcDecoder,
    RpcFrameTooLarge,
    RpcProtocolError,
    RpcSchemaError,
    builtin_registry,
    encode,
    register,
)
from streamer.rpc.codec import HEADER_SIZE

# -- helpers ---------------------------------------------------------------------------

BUILTIN = builtin_registry()
KINDS = BUILTIN.kinds()

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_VALUES: dict[type, st.SearchStrategy[Any]] = {
    str: st.text(max_size=30),
    int: st.integers(-(2**63), 2**63 - 1),
    float: st.floats(allow_nan=False, allow_infinity=False),
    bool: st.booleans(),
    list: st.lists(json_values, max_size=5),
    dict: st.dictionaries(st.text(max_size=10), json_values, max_size=5),
    object: json_values,
}
ids = st.integers(1, 2**63 - 1)


def body_for(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    spec = BUILTIN.spec(kind)
    return st.fixed_dictionaries(
        {name: FIELD_VALUES[t] for name, t in spec.required.items()},
        optional={name: FIELD_VALUES[t] for name, t in spec.optional.items()},
    )


@st.composite
def messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(KINDS))
    body = draw(body_for(kind))
    msg_id = draw(ids)
    shape = "reply" if kind == "error" else draw(st.sampled_from(["request", "notify", "reply"]))
    if shape == "reply":
        return Message(kind, msg_id, body, reply_to=draw(ids))
    return Message(kind, msg_id, body, wants_reply=shape == "request")


def raw_frame(payload: bytes, *, magic: bytes = MAGIC, version: int = PROTOCOL_VERSION) -> bytes:
    return struct.pack(">I", len(payload) + 5) + magic + bytes([version]) + payload


def envelope(**fields: Any) -> bytes:
    env: dict[str, Any] = {"k": "cancel_job", "i": 1, "r": 0, "b": {"job_id": "j1"}}
    env.update(fields)
    return raw_frame(orjson.dumps({k: v for k, v in env.items() if v is not _DROP}))


_DROP = object()

HEARTBEAT = Message("heartbeat", 7, {"worker_id": "w1", "tasks": ["a/0"]})


def decode_all(data: bytes, **kwargs: Any) -> list[Message]:
    decoder = RpcDecoder(**kwargs)
    out = decoder.feed(data)
    decoder.eof()
    return out


# -- registry ------------------------------------------------------------------------


def test_builtin_kinds_are_registered_with_their_schemas() -> None:
    expected = {
        "register_worker": ({"worker_id", "host", "pid", "slots"}, set()),
        "registered": ({"heartbeat_interval", "heartbeat_timeout"}, set()),
        "heartbeat": ({"worker_id", "tasks"}, set()),
        "prepare_job": ({"job_id", "job_ref"}, set()),
        "deploy_task": (
            {"job_id", "job_ref", "job_graph", "task", "attempt", "config"},
            {"restore", "restore_hint"},
        ),
        "deployed": ({"pid"}, {"log_file"}),
        "cancel_task": ({"job_id", "task", "attempt"}, set()),
        "kill_task": ({"job_id", "task"}, {"attempt"}),
        "task_exited": ({"job_id", "task", "attempt", "exit_code"}, {"signal", "error"}),
        "task_hello": ({"job_id", "task", "attempt", "data_address", "pid"}, set()),
        "task_plan": ({"inputs"}, {"restore"}),
        "task_state": ({"job_id", "task", "attempt", "state"}, {"error", "traceback", "at"}),
        "consumer_failed": ({"partition_id", "subpartition"}, {"restore_checkpoint"}),
        "producer_failed": ({"gate", "channel"}, set()),
        "update_partition_info": ({"gate", "channel", "address", "attempt"}, {"dedup_from"}),
        "get_determinants": ({"gate", "channel", "checkpoint_id"}, set()),
        "determinants": ({"found"}, {"seen", "log"}),
        "ack": (set(), set()),
        "task_metrics": ({"job_id", "task", "attempt", "metrics"}, set()),
        "submit_job": ({"job_ref", "config"}, set()),
        "submitted": ({"job_id"}, set()),
        "list_jobs": (set(), set()),
        "jobs": ({"jobs"}, set()),
        "cancel_job": ({"job_id"}, set()),
        "job_status": ({"job_id"}, set()),
        "status": ({"status"}, set()),
        "ok": (set(), set()),
        "error": ({"message"}, set()),
        "trigger_checkpoint": ({"checkpoint_id"}, set()),
        "checkpoint_ack": ({"job_id", "task", "attempt", "checkpoint_id", "state"}, set()),
        "checkpoint_declined": (
            {"job_id", "task", "attempt", "checkpoint_id", "reason"},
            set(),
        ),
        "checkpoint_complete": ({"checkpoint_id"}, set()),
        "checkpoint_abort": ({"checkpoint_id"}, set()),
        "checkpoint_committed": ({"job_id", "task", "attempt", "checkpoint_id"}, set()),
        "trigger_savepoint": ({"job_id", "directory"}, {"stop"}),
        "savepoint": ({"path", "checkpoint_id"}, set()),
    }
    assert set(REGISTRY.kinds()) == set(expected)
    for kind, (required, optional) in expected.items():
        spec = REGISTRY.spec(kind)
        assert set(spec.required) == required, kind
        assert set(spec.optional) == optional, kind
    assert REGISTRY.spec("deploy_task").required["job_graph"] is dict
    assert REGISTRY.spec("registered").required["heartbeat_interval"] is float
    assert REGISTRY.spec("register_worker").replies == {"registered"}
    assert set(BUILTIN.kinds()) == set(expected)


def test_register_is_data_driven_and_idempotent() -> None:
    reg = Registry()
    spec = reg.register("probe_kind", {"checkpoint_id": "int"}, {"note": "any"})
    assert spec.required == {"checkpoint_id": int} and spec.optional == {"note": object}
    assert reg.register("probe_kind", {"checkpoint_id": int}, {"note": object}) is spec
    with pytest.raises(ValueError, match="already registered"):
        reg.register("probe_kind", {"checkpoint_id": str})
    with pytest.raises(ValueError, match="unsupported field type"):
        reg.register("bad_type", {"x": set})
    with pytest.raises(ValueError, match="both required and optional"):
        reg.register("both", {"x": int}, {"x": int})
    with pytest.raises(ValueError, match="message kind must match"):
        reg.register("Bad Kind")
    frame = encode(Message("probe_kind", 1, {"checkpoint_id": 3}), registry=reg)
    assert RpcDecoder(registry=reg).feed(frame)[0].body == {"checkpoint_id": 3}
    with pytest.raises(RpcSchemaError, match="unknown message kind"):
        RpcDecoder().feed(frame)  # not in the process-wide registry


def test_module_level_register_adds_to_the_process_registry() -> None:
    register("test_rpc_codec_probe", {"n": int})
    assert "test_rpc_codec_probe" in REGISTRY
    msg = Message("test_rpc_codec_probe", 1, {"n": 1})
    assert decode_all(encode(msg)) == [msg]


def test_float_fields_accept_ints_and_lists_accept_tuples() -> None:
    msg = Message("registered", 1, {"heartbeat_interval": 1, "heartbeat_timeout": 2.5}, reply_to=3)
    (out,) = decode_all(encode(msg))
    assert out.body == {"heartbeat_interval": 1.0, "heartbeat_timeout": 2.5}
    assert isinstance(out.body["heartbeat_interval"], float)
    hb = Message("heartbeat", 2, {"worker_id": "w", "tasks": ("a", "b")})
    assert decode_all(encode(hb))[0].body["tasks"] == ["a", "b"]


# -- round trips ----------------------------------------------------------------------


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(), min_size=1, max_size=8), st.data())
def test_round_trip_split_at_random_boundaries(msgs: list[Message], data: st.DataObject) -> None:
    stream = b"".join(encode(m) for m in msgs)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = RpcDecoder()
    out: list[Message] = []
    prev = 0
    for cut in [*cuts, len(stream)]:
        out.extend(decoder.feed(stream[prev:cut]))
        assert decoder.buffered < decoder.max_frame_size
        prev = cut
    decoder.eof()
    assert out == msgs
    assert decoder.buffered == 0


@given(messages())
def test_round_trip_byte_by_byte(msg: Message) -> None:
    frame = encode(msg)
    decoder = RpcDecoder()
    out: list[Message] = []
    for i in range(len(frame)):
        out.extend(decoder.feed(frame[i : i + 1]))
        if i < len(frame) - 1:
            assert out == []
    assert out == [msg]


def test_wire_envelope_layout() -> None:
    frame = encode(Message("job_status", 5, {"job_id": "j"}, wants_reply=True))
    assert frame[4:8] == b"STRC" and frame[8] == 1
    assert struct.unpack(">I", frame[:4])[0] == len(frame) - 4
    assert orjson.loads(frame[9:]) == {
        "k": "job_status",
        "i": 5,
        "r": 0,
        "w": True,
        "b": {"job_id": "j"},
    }
    reply = encode(Message("error", 6, {"message": "boom"}, reply_to=5))
    assert orjson.loads(reply[9:]) == {"k": "error", "i": 6, "r": 5, "b": {"message": "boom"}}


# -- corruption -------------------------------------------------------------------------


@settings(max_examples=200)
@given(messages(), st.integers(0, HEADER_SIZE - 1), st.integers(1, 255))
def test_flipped_header_byte_is_rejected_or_waits(msg: Message, index: int, xor: int) -> None:
    frame = bytearray(encode(msg))
    frame[index] ^= xor
    decoder = RpcDecoder()
    try:
        out = decoder.feed(bytes(frame))
    except RpcProtocolError:
        return
    # Only a larger (in-bounds) length can leave the decoder waiting for more bytes.
    assert index < 4
    assert out == []
    assert 0 < decoder.buffered < decoder.max_frame_size
    with pytest.raises(RpcProtocolError, match="inside a frame"):
        decoder.eof()


@settings(max_examples=100)
@given(messages(), st.data())
def test_truncated_frame_then_close(msg: Message, data: st.DataObject) -> None:
    frame = encode(msg)
    n = data.draw(st.integers(1, len(frame) - 1))
    decoder = RpcDecoder()
    assert decoder.feed(frame[:n]) == []
    assert decoder.buffered == n
    with pytest.raises(RpcProtocolError, match="inside a frame"):
        decoder.eof()


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_random_bytes_only_ever_give_protocol_errors(chunks: list[bytes]) -> None:
    decoder = RpcDecoder(max_frame_size=256)
    for chunk in chunks:
        try:
            decoder.feed(chunk)
        except RpcProtocolError:
            return
        assert decoder.buffered < 256


@settings(max_examples=200)
@given(messages(), st.data())
def test_corrupted_payload_gives_protocol_error_or_valid_message(
    msg: Message, data: st.DataObject
) -> None:
    frame = bytearray(encode(msg))
    index = data.draw(st.integers(HEADER_SIZE, len(frame) - 1))
    frame[index] ^= data.draw(st.integers(1, 255))
    try:
        out = decode_all(bytes(frame))
    except RpcProtocolError:
        return
    assert len(out) == 1 and isinstance(out[0], Message)


@pytest.mark.parametrize("length", [DEFAULT_MAX_FRAME_SIZE - 3, 2**31, 2**32 - 1])
def test_oversize_length_is_rejected_before_buffering(length: int) -> None:
    decoder = RpcDecoder()
    header = struct.pack(">I", length) + MAGIC + bytes([PROTOCOL_VERSION])
    for b in header[:3]:
        assert decoder.feed(bytes([b])) == []
        assert decoder.buffered <= 3
    with pytest.raises(RpcFrameTooLarge, match="exceeds the maximum frame size"):
        decoder.feed(header[3:] + b"x" * 1000)
    assert decoder.buffered == 0
    with pytest.raises(RpcProtocolError, match="already failed"):
        decoder.feed(encode(HEARTBEAT))


def test_buffer_stays_bounded_while_a_large_frame_arrives() -> None:
    decoder = RpcDecoder(max_frame_size=4096)
    big = Message("status", 1, {"status": {"blob": "x" * 4000}}, reply_to=1)
    frame = encode(big, max_frame_size=4096)
    for i in range(0, len(frame), 100):
        out = decoder.feed(frame[i : i + 100])
        assert decoder.buffered < 4096
    assert out == [big]
    with pytest.raises(RpcFrameTooLarge):
        RpcDecoder(max_frame_size=1024).feed(frame[:4])


def test_exact_max_frame_size_is_accepted() -> None:
    frame = encode(HEARTBEAT)
    assert RpcDecoder(max_frame_size=len(frame)).feed(frame) == [HEARTBEAT]
    with pytest.raises(RpcFrameTooLarge):
        RpcDecoder(max_frame_size=len(frame) - 1).feed(frame)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (raw_frame(b"{}", magic=b"XTRC"), "bad magic"),
        (b"\x00\x00\x00\x10STRX", "bad magic"),
        (b"\x00\x00\x00\x10Q", "bad magic"),
        (raw_frame(b"{}", version=2), "unsupported rpc protocol version 2"),
        (raw_frame(b"{}", version=0), "unsupported rpc protocol version 0"),
        (b"\x00\x00\x00\x03STR", "too short"),
        (raw_frame(b"not json"), "not JSON"),
        (raw_frame(b'{"k": "ok"'), "not JSON"),
        (raw_frame(b"\xff\xfe{}"), "not JSON"),
        (raw_frame(b"[1, 2]"), "must be a JSON object, got list"),
        (envelope(k="no_such_kind"), "no_such_kind: unknown message kind"),
        (envelope(k=5), "envelope 'k' must be a str"),
        (envelope(i=0), "envelope 'i' must be an int > 0"),
        (envelope(i=-3), "envelope 'i' must be an int > 0"),
        (envelope(i="1"), "envelope 'i' must be an int > 0"),
        (envelope(i=True), "envelope 'i' must be an int > 0"),
        (envelope(i=_DROP), "envelope 'i' must be an int > 0"),
        (envelope(r=-1), "envelope 'r' must be an int >= 0"),
        (envelope(r=1.5), "envelope 'r' must be an int >= 0"),
        (envelope(w="yes"), "envelope 'w' must be a bool"),
        (envelope(r=4, w=True), "a reply cannot want a reply"),
        (envelope(b=_DROP), "has no body"),
        (envelope(b=[]), "cancel_job: body must be an object, got list"),
        (envelope(x=1), "unexpected envelope keys"),
        (envelope(k="error", b={"message": "m"}), "an error must be a reply"),
        (envelope(b={}), "cancel_job.job_id: missing required field"),
        (envelope(b={"job_id": 3}), "cancel_job.job_id: must be str, got int"),
        (envelope(b={"job_id": None}), "cancel_job.job_id: must be str, got null"),
        (envelope(b={"job_id": "j", "extra": 1}), "cancel_job.extra: unknown field"),
        (
            envelope(k="deployed", r=1, b={"pid": True}),
            "deployed.pid: must be int, got bool",
        ),
        (
            raw_frame(b'{"k":"deployed","i":1,"r":1,"b":{"pid":1000000000000000000000000}}'),
            "deployed.pid: must be int, got float",
        ),
        (
            envelope(k="kill_task", b={"job_id": "j", "task": "t", "attempt": "2"}),
            "kill_task.attempt: must be int, got str",
        ),
        (
            envelope(k="registered", r=1, b={"heartbeat_interval": "1", "heartbeat_timeout": 1}),
            "registered.heartbeat_interval: must be float, got str",
        ),
    ],
)
def test_malformed_input_raises_protocol_error(data: bytes, reason: str) -> None:
    decoder = RpcDecoder()
    with pytest.raises(RpcProtocolError) as info:
        decoder.feed(data)
        decoder.eof()
    assert reason in str(info.value)
    assert "\n" not in str(info.value)
    assert decoder.failed


def test_schema_error_names_kind_and_field() -> None:
    with pytest.raises(RpcSchemaError) as info:
        RpcDecoder().feed(envelope(b={"job_id": 3}))
    assert info.value.kind == "cancel_job" and info.value.field == "job_id"


def test_valid_frames_before_and_after_are_decoded_in_order() -> None:
    a = Message("cancel_job", 1, {"job_id": "a"}, wants_reply=True)
    b = Message("ok", 2, {}, reply_to=9)
    assert decode_all(encode(a) + encode(b) + encode(a)) == [a, b, a]


# -- encode-side validation ----------------------------------------------------------


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (Message("nope", 1, {}), "nope: unknown message kind"),
        (Message("cancel_job", 1, {}), "cancel_job.job_id: missing required field"),
        (Message("cancel_job", 1, {"job_id": b"x"}), "cancel_job.job_id: must be str, got bytes"),
        (
            Message("register_worker", 1, {"worker_id": "w", "host": "h", "pid": 1.0, "slots": 1}),
            "register_worker.pid: must be int, got float",
        ),
        (
            Message(
                "registered", 1, {"heartbeat_interval": float("nan"), "heartbeat_timeout": 1.0}
            ),
            "registered.heartbeat_interval: must be a finite float",
        ),
        (
            Message(
                "task_metrics",
                1,
                {"job_id": "j", "task": "t", "attempt": 0, "metrics": {"x": {1, 2}}},
            ),
            "task_metrics.metrics: not JSON-serializable",
        ),
        (
            Message("cancel_job", 1, {"job_id": "j", "force": True}),
            "cancel_job.force: unknown field",
        ),
        (Message("cancel_job", 0, {"job_id": "j"}), "message id must be an int > 0"),
        (Message("cancel_job", 1, {"job_id": "j"}, reply_to=-1), "reply_to must be an int >= 0"),
        (Message("ok", 2, {}, reply_to=1, wants_reply=True), "a reply cannot want a reply"),
        (Message("error", 2, {"message": "m"}), "an error must be a reply"),
    ],
)
def test_encode_rejects_malformed_messages(msg: Message, reason: str) -> None:
    with pytest.raises(RpcSchemaError) as info:
        encode(msg)
    assert reason in str(info.value)
    assert str(info.value).startswith(msg.kind)


def test_encode_rejects_oversize_frames() -> None:
    msg = Message("status", 1, {"status": {"blob": "x" * 2000}}, reply_to=1)
    with pytest.raises(RpcFrameTooLarge, match="exceeds the maximum frame size 1024"):
        encode(msg, max_frame_size=1024)


def test_schema_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        encode(Message("cancel_job", 1, {}))
