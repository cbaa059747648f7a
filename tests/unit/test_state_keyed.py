"""KeyedStateBackend on a real rocksdict database in a temporary directory."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import rocksdict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.graph.keygroups import key_group_for_key, key_group_range, subtask_for_key_group
from streamer.state import (
    KeyedStateBackend,
    KeyGroupOutOfRangeError,
    StateError,
)

MAXP = 128


class FakeClock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def open_all(path: Path, maxp: int = MAXP, **kw: Any) -> KeyedStateBackend:
    return KeyedStateBackend.open(path, max_parallelism=maxp, key_groups=range(maxp), **kw)


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[KeyedStateBackend]:
    b = open_all(tmp_path / "db")
    yield b
    b.close()


def raw_entries(path: Path) -> dict[bytes, bytes]:
    """Every key/value of a closed state database, metadata record excluded."""
    db = rocksdict.Rdict(
        str(path), rocksdict.Options(raw_mode=True), access_type=rocksdict.AccessType.read_only()
    )
    try:
        entries: dict[bytes, bytes] = {}
        for key, value in db.items():
            assert isinstance(key, bytes) and isinstance(value, bytes)
            if not key.startswith(b"\xff\xff"):
                entries[key] = value
        return entries
    finally:
        db.close()


# ---------------------------------------------------------------------- semantics


def test_value_state_per_key(backend: KeyedStateBackend) -> None:
    count = backend.value_state("count")
    backend.set_current_key("a")
    assert count.value() is None
    assert count.value(0) == 0
    count.update(1)
    backend.set_current_key("b")
    assert count.value(0) == 0
    count.update({"x": [1, 2]})
    backend.set_current_key("a")
    assert count.value() == 1
    assert backend.current_key == "a"
    assert backend.current_key_group == key_group_for_key("a", MAXP)
    count.clear()
    assert count.value("gone") == "gone"
    backend.set_current_key("b")
    assert count.value() == {"x": [1, 2]}
    count.update(None)  # a stored null is not "absent"
    assert count.value("default") is None
    backend.set_current_key(("a", 1))
    count.update((1, 2))
    assert count.value() == [1, 2]  # orjson round trip: tuples come back as lists


def test_int_and_str_keys_share_state(backend: KeyedStateBackend) -> None:
    # key_to_bytes(42) == key_to_bytes("42"): one key, as routing treats them.
    v = backend.value_state("v")
    backend.set_current_key(42)
    v.update("x")
    backend.set_current_key("42")
    assert v.value() == "x"


def test_map_state(backend: KeyedStateBackend) -> None:
    m = backend.map_state("m")
    backend.set_current_key("k1")
    assert m.is_empty()
    m.put("b", 2)
    m.put("a", 1)
    m.put(10, "ten")
    m.put(9, "nine")
    m.put(["t", 1], "tuple")
    assert m.get("a") == 1
    assert m.get("zz", "dflt") == "dflt"
    assert m.contains("b") and "b" in m and not m.contains("c")
    expected = sorted(
        [("b", 2), ("a", 1), (10, "ten"), (9, "nine"), (["t", 1], "tuple")],
        key=lambda kv: orjson.dumps(kv[0]),
    )
    assert list(m.items()) == expected
    assert list(m.keys()) == [k for k, _ in expected]
    assert list(m.values()) == [v for _, v in expected]
    ks = list(m.keys())
    assert ks.index(10) < ks.index(9)  # byte order of the encoding
    m.remove("a")
    m.remove("never")
    assert not m.contains("a")
    backend.set_current_key("k2")
    assert m.is_empty() and list(m.items()) == []
    m.put_all({"x": 1, "y": 2})
    m.put_all([("z", 3)])
    assert dict(m.items()) == {"x": 1, "y": 2, "z": 3}
    m.clear()
    assert m.is_empty()
    backend.set_current_key("k1")
    assert len(list(m.items())) == 4
    with pytest.raises(TypeError):
        m.put(b"bytes are not json", 1)
    with pytest.raises(TypeError, match="cannot store"):
        m.put("big", 2**64)


def test_list_state(backend: KeyedStateBackend) -> None:
    lst = backend.list_state("l")
    backend.set_current_key("a")
    assert lst.get() == []
    lst.add(1)
    lst.add({"x": 2})
    lst.add_all([3, 4])
    assert lst.get() == [1, {"x": 2}, 3, 4]
    backend.set_current_key("b")
    assert lst.get() == []
    lst.update(["p", "q"])
    backend.set_current_key("a")
    lst.update([9])
    assert lst.get() == [9]
    lst.add(10)
    assert lst.get() == [9, 10]
    lst.clear()
    assert lst.get() == []
    lst.add("again")
    assert lst.get() == ["again"]
    backend.set_current_key("b")
    assert lst.get() == ["p", "q"]
    lst.update([])
    assert lst.get() == []


def test_list_appends_after_many_elements(backend: KeyedStateBackend) -> None:
    lst = backend.list_state("l")
    backend.set_current_key("k")
    for i in range(300):  # sequence numbers cross a byte boundary
        lst.add(i)
    assert lst.get() == list(range(300))


def test_states_are_isolated_and_kinds_checked(backend: KeyedStateBackend) -> None:
    v = backend.value_state("a")
    m = backend.map_state("b")
    lst = backend.list_state("c")
    backend.set_current_key("k")
    v.update(1)
    m.put("x", 2)
    lst.add(3)
    assert backend.value_state("a").value() == 1  # a second handle on the same state
    assert (v.value(), dict(m.items()), lst.get()) == (1, {"x": 2}, [3])
    with pytest.raises(StateError, match="is a map state"):
        backend.value_state("b")
    with pytest.raises(StateError):
        backend.value_state("")
    with pytest.raises(StateError, match="ttl_ms"):
        backend.value_state("t", ttl_ms=0)
    assert "t" not in backend.state_names


def test_no_current_key(backend: KeyedStateBackend) -> None:
    v = backend.value_state("v")
    with pytest.raises(StateError, match="set_current_key"):
        v.value()


def test_key_outside_range_raises(tmp_path: Path) -> None:
    kgs = key_group_range(0, MAXP, 4)
    with KeyedStateBackend.open(tmp_path / "db", max_parallelism=MAXP, key_groups=kgs) as b:
        inside = next(k for k in map(str, range(1000)) if key_group_for_key(k, MAXP) in kgs)
        outside = next(k for k in map(str, range(1000)) if key_group_for_key(k, MAXP) not in kgs)
        b.set_current_key(inside)
        with pytest.raises(KeyGroupOutOfRangeError, match="outside this task's key groups"):
            b.set_current_key(outside)
        assert b.current_key == inside  # unchanged
        with pytest.raises(KeyGroupOutOfRangeError):
            b.set_current_key(inside, key_group=kgs.stop)


def test_bad_layout_rejected(tmp_path: Path) -> None:
    with pytest.raises(StateError):
        KeyedStateBackend.open(tmp_path / "a", max_parallelism=8, key_groups=range(4, 9))
    with pytest.raises(StateError):
        KeyedStateBackend.open(tmp_path / "b", max_parallelism=0x10000, key_groups=range(1))
    with pytest.raises(StateError):
        KeyedStateBackend.open(tmp_path / "c", max_parallelism=8, key_groups=range(3, 3))


def test_reopen_keeps_state_and_checks_layout(tmp_path: Path) -> None:
    with open_all(tmp_path / "db") as b:
        b.value_state("x")
        b.map_state("y").name  # noqa: B018 - registration only
        b.set_current_key("k")
        b.value_state("x").update(5)
    with open_all(tmp_path / "db") as b:
        assert b.state_names == {"x": {"id": 0, "kind": "value"}, "y": {"id": 1, "kind": "map"}}
        b.set_current_key("k")
        assert b.value_state("x").value() == 5
    with pytest.raises(StateError, match="max_parallelism"):
        KeyedStateBackend.open(tmp_path / "db", max_parallelism=64, key_groups=range(64))
    with pytest.raises(StateError, match="key groups"):
        KeyedStateBackend.open(tmp_path / "db", max_parallelism=MAXP, key_groups=range(64))


def test_close_releases_unfinished_iterators(tmp_path: Path) -> None:
    b = open_all(tmp_path / "db")
    m = b.map_state("m")
    b.set_current_key("k")
    m.put_all({str(i): i for i in range(10)})
    items = m.items()
    assert next(items) == ("0", 0)
    keys = b.keys_of("m")
    assert next(keys) == b"k"
    b.close()
    b.close()  # idempotent
    with pytest.raises(StopIteration):
        next(items)
    with pytest.raises(StateError, match="closed"):
        m.get("0")
    with open_all(tmp_path / "db") as again:  # the database lock was released
        again.set_current_key("k")
        assert again.map_state("m").get("3") == 3


def test_modifying_while_iterating(backend: KeyedStateBackend) -> None:
    m = backend.map_state("m")
    backend.set_current_key("k")
    m.put_all({"a": 1, "b": 2, "c": 3})
    for key in m:
        m.remove(key)
    assert m.is_empty()


def test_keys_of(tmp_path: Path) -> None:
    kgs = key_group_range(1, 16, 2)
    with KeyedStateBackend.open(tmp_path / "db", max_parallelism=16, key_groups=kgs) as b:
        v, m, lst = b.value_state("v"), b.map_state("m"), b.list_state("l")
        mine = [k for k in (f"key{i}" for i in range(200)) if key_group_for_key(k, 16) in kgs]
        for key in mine:
            b.set_current_key(key)
            v.update(1)
            m.put_all({"a": 1, "b": 2, "\uffff": 3})
            lst.add_all([1, 2, 3])
        # key bytes ending in 0xff must not confuse skipping to the next key
        ff_key = next(
            b"\xff" * n for n in range(1, 50) if key_group_for_key(b"\xff" * n, 16) in kgs
        )
        b.set_current_key(ff_key)
        m.put_all({"x": 1, "y": 2})
        for name in ("v", "m", "l"):
            got = list(b.keys_of(name))
            want = {k.encode() for k in mine} | ({ff_key} if name == "m" else set())
            assert set(got) == want and len(got) == len(want), name
            assert got == sorted(got, key=lambda kb: (key_group_for_key(kb, 16), len(kb), kb))
        # key bytes address the same state as the original key
        b.set_current_key(next(b.keys_of("v")))
        assert v.value() == 1
        with pytest.raises(StateError, match="unknown state"):
            list(b.keys_of("nope"))


# ---------------------------------------------------------------------- hypothesis: layout

_keys = st.one_of(st.text(max_size=6), st.integers(-(10**6), 10**6), st.binary(max_size=6))
_user_keys = st.one_of(st.text(max_size=4), st.integers(-1000, 1000), st.booleans())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["m1", "m2"]),
            _keys,
            _user_keys,
            st.integers(-(2**31), 2**31),
            st.booleans(),
        ),
        max_size=60,
    )
)
def test_map_prefix_isolation_and_order(ops: list[tuple[str, Any, Any, int, bool]]) -> None:
    """Random keys in few key groups: each (state, key) map sees only its own entries, in order."""
    model: dict[tuple[str, bytes], dict[bytes, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        b = open_all(Path(tmp) / "db", maxp=3)  # 3 key groups: many keys share one
        try:
            states = {"m1": b.map_state("m1"), "m2": b.map_state("m2")}
            v = b.value_state("v")
            for state, key, user_key, value, remove in ops:
                b.set_current_key(key)
                kb = key if isinstance(key, bytes) else str(key).encode()
                entries = model.setdefault((state, kb), {})
                ukb = orjson.dumps(user_key)
                if remove:
                    states[state].remove(user_key)
                    entries.pop(ukb, None)
                else:
                    states[state].put(user_key, value)
                    entries[ukb] = value
                v.update(value)  # a value state under the same key must not leak into maps
            for (state, kb), entries in model.items():
                b.set_current_key(kb)
                got = list(states[state].items())
                want = [(orjson.loads(k), entries[k]) for k in sorted(entries)]
                assert got == want
                assert states[state].is_empty() == (not entries)
        finally:
            b.close()


# ---------------------------------------------------------------------- TTL


def test_ttl_value_map_list(tmp_path: Path) -> None:
    clock = FakeClock()
    with open_all(tmp_path / "db", clock=clock) as b:
        v = b.value_state("v", ttl_ms=100)
        m = b.map_state("m", ttl_ms=100)
        lst = b.list_state("l", ttl_ms=100)
        forever = b.value_state("forever")
        b.set_current_key("k")
        v.update("x")
        m.put("a", 1)
        lst.add("e1")
        forever.update("stays")
        clock.now += 50
        m.put("b", 2)  # written later: expires later
        lst.add("e2")
        assert v.value() == "x" and dict(m.items()) == {"a": 1, "b": 2}
        clock.now += 50  # t0 + 100: the first entries expire (expiry <= now)
        assert v.value("expired") == "expired"
        assert m.get("a") is None and not m.contains("a")
        assert dict(m.items()) == {"b": 2} and not m.is_empty()
        assert lst.get() == ["e2"]
        assert forever.value() == "stays"
        v.update("y")  # update restarts the TTL
        clock.now += 60
        assert v.value() == "y"
        assert m.is_empty() and lst.get() == []
        # expired entries are still stored until cleaned up
        assert set(b.keys_of("m")) == {b"k"}
        assert b.cleanup_expired() == 4  # m.a, m.b, l.e1, l.e2
        assert list(b.keys_of("m")) == []
        assert v.value() == "y" and forever.value() == "stays"
        assert b.cleanup_expired(now_ms=clock.now + 10**6) == 1  # v
        assert forever.value() == "stays"
        lst.add("new")  # appends after cleanup still work
        assert lst.get() == ["new"]


def test_ttl_survives_snapshot_restore(tmp_path: Path) -> None:
    clock = FakeClock()
    with open_all(tmp_path / "db", clock=clock) as b:
        b.set_current_key("k")
        b.value_state("v", ttl_ms=100).update(1)
        meta = b.snapshot(tmp_path / "snap")
    restored = KeyedStateBackend.restore(
        tmp_path / "r",
        [(tmp_path / "snap", meta)],
        max_parallelism=MAXP,
        key_groups=range(MAXP),
        clock=clock,
    )
    with restored:
        restored.set_current_key("k")
        v = restored.value_state("v")  # no ttl on this handle: expiry is per entry
        assert v.value() == 1
        clock.now += 100
        assert v.value() is None


# ---------------------------------------------------------------------- snapshot / restore


def fill(b: KeyedStateBackend, keys: list[str]) -> None:
    v, m, lst = b.value_state("v"), b.map_state("m"), b.list_state("l")
    for key in keys:
        b.set_current_key(key)
        v.update({"key": key, "n": len(key)})
        m.put_all({"a": key, "b": [key, 1]})
        lst.add_all([key, len(key)])


def check(b: KeyedStateBackend, key: str) -> None:
    b.set_current_key(key)
    assert b.value_state("v").value() == {"key": key, "n": len(key)}
    assert list(b.map_state("m").items()) == [("a", key), ("b", [key, 1])]
    assert b.list_state("l").get() == [key, len(key)]


def test_snapshot_restore_identical(tmp_path: Path) -> None:
    keys = [f"user-{i}" for i in range(500)]
    with open_all(tmp_path / "db") as b:
        fill(b, keys)
        meta = b.snapshot(tmp_path / "snap")
        assert meta == {
            "format": 1,
            "max_parallelism": MAXP,
            "key_groups": [0, MAXP],
            "state_names": {
                "v": {"id": 0, "kind": "value"},
                "m": {"id": 1, "kind": "map"},
                "l": {"id": 2, "kind": "list"},
            },
        }
        orjson.dumps(meta)
        with pytest.raises(StateError, match="already exists"):
            b.snapshot(tmp_path / "snap")
        # writes after the snapshot are not in it
        b.set_current_key("late")
        b.value_state("v").update("late")
    original = raw_entries(tmp_path / "db")
    snap_files = sorted(p.name for p in (tmp_path / "snap").iterdir())
    # fast path (same range, one source) and general path (iterate) both give identical data
    fast = KeyedStateBackend.restore(
        tmp_path / "fast",
        [(tmp_path / "snap", meta)],
        max_parallelism=MAXP,
        key_groups=range(MAXP),
    )
    half1 = KeyedStateBackend.restore(
        tmp_path / "h1", [(tmp_path / "snap", meta)], max_parallelism=MAXP, key_groups=range(64)
    )
    for r in (fast, half1):
        assert r.state_names == meta["state_names"]  # ids stable across restore
        for key in keys:
            if key_group_for_key(key, MAXP) in r.key_groups:
                check(r, key)
    fast.set_current_key("late")
    assert fast.value_state("v").value() is None
    fast.close()
    half1.close()
    del original[next(k for k in original if b"late" in k)]
    assert raw_entries(tmp_path / "fast") == original
    assert raw_entries(tmp_path / "h1") == {
        k: v for k, v in original.items() if int.from_bytes(k[:2], "big") < 64
    }
    # restoring never modifies the snapshot
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == snap_files


def test_restore_rejects_bad_sources(tmp_path: Path) -> None:
    with open_all(tmp_path / "db") as b:
        fill(b, ["a"])
        meta = b.snapshot(tmp_path / "snap")
    src = [(tmp_path / "snap", meta)]
    with pytest.raises(StateError, match="max_parallelism cannot change"):
        KeyedStateBackend.restore(tmp_path / "x1", src, max_parallelism=64, key_groups=range(64))
    with pytest.raises(StateError, match="format"):
        KeyedStateBackend.restore(
            tmp_path / "x2",
            [(tmp_path / "snap", {**meta, "format": 9})],
            max_parallelism=MAXP,
            key_groups=range(MAXP),
        )
    with pytest.raises(StateError, match="overlap"):
        KeyedStateBackend.restore(
            tmp_path / "x3", src + src, max_parallelism=MAXP, key_groups=range(MAXP)
        )
    partial = {**meta, "key_groups": [0, 10]}
    with pytest.raises(StateError, match="missing"):
        KeyedStateBackend.restore(
            tmp_path / "x4",
            [(tmp_path / "snap", partial)],
            max_parallelism=MAXP,
            key_groups=range(20),
        )
    # metadata that does not describe the snapshot's database
    for target, kgs in (("x5", range(10)), ("x6", range(5))):
        with pytest.raises(StateError, match="key groups"):
            KeyedStateBackend.restore(
                tmp_path / target,
                [(tmp_path / "snap", partial)],
                max_parallelism=MAXP,
                key_groups=kgs,
            )
        assert not (tmp_path / target).exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(StateError, match="not an empty directory"):
        KeyedStateBackend.restore(
            tmp_path / "busy", src, max_parallelism=MAXP, key_groups=range(MAXP)
        )
    # no sources: empty state
    with KeyedStateBackend.restore(
        tmp_path / "empty", [], max_parallelism=MAXP, key_groups=range(MAXP)
    ) as empty:
        empty.set_current_key("a")
        assert empty.value_state("v").value() is None


def test_restore_merges_state_ids(tmp_path: Path) -> None:
    """Snapshots that registered states in different orders restore into one id space."""
    halves = [range(0, 8), range(8, 16)]
    sources = []
    for i, (kgs, order) in enumerate(zip(halves, (["x", "y"], ["y", "z", "x"]), strict=True)):
        with KeyedStateBackend.open(tmp_path / f"db{i}", max_parallelism=16, key_groups=kgs) as b:
            handles = {name: b.value_state(name) for name in order}
            for key in (f"k{j}" for j in range(100)):
                if key_group_for_key(key, 16) in kgs:
                    b.set_current_key(key)
                    for name, h in handles.items():
                        h.update(f"{name}:{key}")
            sources.append((tmp_path / f"s{i}", b.snapshot(tmp_path / f"s{i}")))
    with KeyedStateBackend.restore(
        tmp_path / "all", sources, max_parallelism=16, key_groups=range(16)
    ) as r:
        assert r.state_names == {
            "x": {"id": 0, "kind": "value"},
            "y": {"id": 1, "kind": "value"},
            "z": {"id": 2, "kind": "value"},
        }
        for key in (f"k{j}" for j in range(100)):
            r.set_current_key(key)
            second = key_group_for_key(key, 16) >= 8
            assert r.value_state("x").value() == f"x:{key}"
            assert r.value_state("y").value() == f"y:{key}"
            assert r.value_state("z").value() == (f"z:{key}" if second else None)


def test_restore_kind_conflict(tmp_path: Path) -> None:
    sources = []
    for i, kgs in enumerate([range(0, 8), range(8, 16)]):
        with KeyedStateBackend.open(tmp_path / f"db{i}", max_parallelism=16, key_groups=kgs) as b:
            (b.value_state if i == 0 else b.map_state)("s")
            sources.append((tmp_path / f"s{i}", b.snapshot(tmp_path / f"s{i}")))
    with pytest.raises(StateError, match="is a value state"):
        KeyedStateBackend.restore(tmp_path / "r", sources, max_parallelism=16, key_groups=range(16))
    assert not (tmp_path / "r").exists()  # a failed restore leaves nothing behind


def test_rescale_4_to_2_and_8(tmp_path: Path) -> None:
    keys = [f"user-{i}" for i in range(10_000)]
    by_subtask: dict[int, list[str]] = {}
    for key in keys:
        by_subtask.setdefault(
            subtask_for_key_group(key_group_for_key(key, MAXP), MAXP, 4), []
        ).append(key)
    sources = []
    for sub in range(4):
        kgs = key_group_range(sub, MAXP, 4)
        with KeyedStateBackend.open(
            tmp_path / f"p4-{sub}", max_parallelism=MAXP, key_groups=kgs
        ) as b:
            fill(b, by_subtask[sub])
            b.value_state("registered-but-unused")
            snap = tmp_path / f"snap-{sub}"
            sources.append((snap, b.snapshot(snap)))
    for parallelism in (2, 8):
        seen: set[str] = set()
        for sub in range(parallelism):
            kgs = key_group_range(sub, MAXP, parallelism)
            with KeyedStateBackend.restore(
                tmp_path / f"p{parallelism}-{sub}", sources, max_parallelism=MAXP, key_groups=kgs
            ) as r:
                assert r.state_names == sources[0][1]["state_names"]
                owned = {k for k in keys if key_group_for_key(k, MAXP) in kgs}
                for name in ("v", "m", "l"):  # nothing else landed here
                    assert {kb.decode() for kb in r.keys_of(name)} == owned
                for key in owned:
                    check(r, key)
                assert not seen & owned
                seen |= owned
        assert seen == set(keys)
