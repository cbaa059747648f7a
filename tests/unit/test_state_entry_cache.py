"""The state's write-back cache: plain values held decoded, written at the flush, and
agreeing with RocksDB after it (real RocksDB, no broker)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.state._layout import ABSENT
from streamer.state.entry_cache import MISSING, EntryCache, is_plain
from streamer.state.keyed import KeyedStateBackend

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[KeyedStateBackend]:
    b = KeyedStateBackend.open(tmp_path / "db", max_parallelism=16, key_groups=range(16))
    yield b
    b.close()


def reopened(b: KeyedStateBackend, path: Path) -> KeyedStateBackend:
    b.close()
    return KeyedStateBackend.open(path, max_parallelism=16, key_groups=range(16))


@pytest.mark.parametrize(
    ("value", "plain"),
    [(0, True), (-(2**63), True), (2**64 - 1, True), (2**64, False), (-(2**63) - 1, False),
     (1.5, True), (float("inf"), False), (float("nan"), False), (True, True), (None, True),
     ("s", False), ([1], False), ({"a": 1}, False)],
)  # fmt: skip
def test_only_immutable_values_that_json_keeps_exactly_are_plain(value: Any, plain: bool) -> None:
    assert is_plain(value) is plain


def test_a_plain_value_is_written_at_the_flush_and_read_back(
    backend: KeyedStateBackend, tmp_path: Path
) -> None:
    count = backend.value_state("count")
    backend.set_current_key("k1")
    for n in range(1, 101):
        count.update(n)
    cache: EntryCache = backend._access.cache
    key = backend._access.prefix(b"\0\0")
    assert cache.values == {key: 100}  # held decoded: nothing encoded yet
    assert backend._access.db.get(key) is None  # and not in RocksDB before the flush
    backend = reopened(backend, tmp_path / "db")
    backend.set_current_key("k1")
    assert backend.value_state("count").value() == 100


def test_a_value_that_is_not_plain_goes_the_raw_way(backend: KeyedStateBackend) -> None:
    s = backend.value_state("s")
    backend.set_current_key("k")
    s.update(7)
    s.update({"n": 1})  # a container replaces the plain value
    got = s.value()
    assert got == {"n": 1}
    got["n"] = 2  # a fresh object each read: the state does not change
    assert s.value() == {"n": 1}
    s.update(8)
    assert s.value() == 8
    s.clear()
    assert s.value("gone") == "gone"
    backend.snapshot_metadata()
    backend._access.flush()
    assert backend._access.db.get(backend._access.prefix(b"\0\0")) is None


def test_a_ttl_value_is_never_held_decoded(backend: KeyedStateBackend) -> None:
    now = [1_000]
    backend._access.clock = lambda: now[0]
    s = backend.value_state("t", ttl_ms=100)
    backend.set_current_key("k")
    s.update(5)
    assert backend._access.cache.values == {}
    assert backend._access.cache.get_value(backend._access.prefix(b"\0\0")) is MISSING
    assert s.value() == 5
    now[0] = 1_100
    assert s.value("expired") == "expired"


def test_a_plain_and_a_ttl_handle_on_one_state_see_each_others_writes(
    backend: KeyedStateBackend,
) -> None:
    plain, ttl = backend.value_state("v"), backend.value_state("v", ttl_ms=60_000)
    backend.set_current_key("k")
    plain.update(1)
    assert ttl.value() == 1  # the raw read encodes the held value
    ttl.update(2)
    assert plain.value() == 2  # the raw write dropped the held value
    plain.update(3)
    assert ttl.value() == 3


def test_absence_is_remembered_and_a_delete_after_a_held_value_is_written(
    backend: KeyedStateBackend, tmp_path: Path
) -> None:
    s = backend.value_state("v")
    backend.set_current_key("k")
    assert s.value() is None
    cache = backend._access.cache
    assert list(cache.values.values()) == [ABSENT]
    s.update(4)
    backend._access.flush()
    s.clear()
    assert s.value(-1) == -1  # absent again, held as such
    backend = reopened(backend, tmp_path / "db")
    backend.set_current_key("k")
    assert backend.value_state("v").value(-1) == -1


def test_a_full_cache_is_flushed_and_emptied(backend: KeyedStateBackend) -> None:
    cache = backend._access.cache
    cache.limit = 10
    s = backend.value_state("v")
    for i in range(25):
        backend.set_current_key(f"k{i}")
        s.update(i)
    assert len(cache.values) <= 10
    for i in range(25):
        backend.set_current_key(f"k{i}")
        assert s.value() == i


ops = st.lists(
    st.tuples(
        st.sampled_from(["set", "set_obj", "clear", "get", "flush", "scan"]),
        st.integers(0, 5),
        st.integers(-3, 3),
    ),
    max_size=60,
)


@given(ops)
@settings(max_examples=60, deadline=None)
def test_the_state_agrees_with_a_dict(program: list[tuple[str, int, int]]) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        b = KeyedStateBackend.open(Path(d) / "db", max_parallelism=16, key_groups=range(16))
        b._access.cache.limit = 4
        s = b.value_state("v")
        oracle: dict[str, Any] = {}
        for op, k, n in program:
            key = f"k{k}"
            b.set_current_key(key)
            if op == "set":
                s.update(n)
                oracle[key] = n
            elif op == "set_obj":
                s.update([n])
                oracle[key] = [n]
            elif op == "clear":
                s.clear()
                oracle.pop(key, None)
            elif op == "get":
                assert s.value("none") == oracle.get(key, "none")
            elif op == "flush":
                b._access.flush()
            else:
                assert sorted(x.decode() for x in b.keys_of("v")) == sorted(oracle)
        b.close()
        b = KeyedStateBackend.open(Path(d) / "db", max_parallelism=16, key_groups=range(16))
        s = b.value_state("v")
        for key, value in oracle.items():
            b.set_current_key(key)
            assert s.value() == value
        assert sorted(x.decode() for x in b.keys_of("v")) == sorted(oracle)
        b.close()
