"""Key groups: canonical key bytes, crc32 routing, Flink's key-group ranges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamer.graph.keygroups import (
    DEFAULT_MAX_PARALLELISM,
    key_group_for_key,
    key_group_range,
    key_to_bytes,
    subtask_for_key,
    subtask_for_key_group,
)

KEYS: list[Any] = [
    "user-1",
    "",
    "ключ",
    b"\x00\xff",
    42,
    -7,
    0,
    10**30,
    ("a", 1),
    ["a", 1],
    {"b": 1, "a": 2},
    None,
    True,
    1.5,
]

_ASSIGN_SCRIPT = """
import json, sys
from streamer.graph.keygroups import key_group_for_key, subtask_for_key
keys = json.loads(sys.argv[1])
keys = [bytes.fromhex(k["hex"]) if isinstance(k, dict) and "hex" in k else k for k in keys]
out = [[key_group_for_key(k, 128), subtask_for_key(k, 128, 4), subtask_for_key(k, 1000, 7)]
       for k in keys]
print(json.dumps(out))
"""


def _portable_keys() -> list[Any]:
    keys: list[Any] = [f"key-{i}" for i in range(200)] + list(range(-50, 50))
    keys += ["ключ", "", [1, "x"], {"z": 1, "a": [2, 3]}, None, False, 2.25]
    return keys


def _assignments(keys: list[Any]) -> list[list[int]]:
    return [
        [key_group_for_key(k, 128), subtask_for_key(k, 128, 4), subtask_for_key(k, 1000, 7)]
        for k in keys
    ]


def test_default_max_parallelism() -> None:
    assert DEFAULT_MAX_PARALLELISM == 128


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("user-1", b"user-1"),
        ("ключ", "ключ".encode()),
        (b"\x00\xff", b"\x00\xff"),
        (bytearray(b"ab"), b"ab"),
        (42, b"42"),
        (-7, b"-7"),
        (10**30, b"1" + b"0" * 30),
        (True, b"true"),
        (None, b"null"),
        (1.5, b"1.5"),
        (("a", 1), b'["a",1]'),
        (["a", 1], b'["a",1]'),
        ({"b": 1, "a": 2}, b'{"a":2,"b":1}'),
    ],
)
def test_key_to_bytes(key: Any, expected: bytes) -> None:
    assert key_to_bytes(key) == expected


def test_int_and_its_decimal_string_share_a_key_group() -> None:
    assert key_group_for_key(42, 128) == key_group_for_key("42", 128)


def test_unserializable_key_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="cannot use object as a key"):
        key_to_bytes(object())


@pytest.mark.parametrize("key", KEYS)
def test_key_group_is_crc32_mod_max_parallelism(key: Any) -> None:
    for m in (1, 7, 128, 32768):
        assert key_group_for_key(key, m) == zlib.crc32(key_to_bytes(key)) % m


def test_pinned_values() -> None:
    # crc32 values checked by hand with zlib.crc32
    assert zlib.crc32(b"user-1") == 2116437524
    assert key_group_for_key("user-1", 128) == 20
    assert key_group_for_key(42, 128) == 8  # crc32(b"42") = 841265288
    assert key_group_for_key(("a", 1), 128) == 57  # crc32(b'["a",1]') = 3127077433
    assert key_group_for_key(b"\x00\xff", 128) == 114
    assert key_group_for_key("", 128) == 0
    assert subtask_for_key(b"\x00\xff", 128, 4) == 3
    assert subtask_for_key(b"\x00\xff", 128, 3) == 2
    assert subtask_for_key(None, 128, 4) == 2  # crc32(b"null") % 128 = 79
    assert subtask_for_key_group(127, 128, 4) == 3
    assert subtask_for_key_group(31, 128, 4) == 0
    assert subtask_for_key_group(32, 128, 4) == 1


def test_assignment_is_the_same_in_every_process() -> None:
    keys = _portable_keys()
    expected = _assignments(keys)
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run(
            [sys.executable, "-c", _ASSIGN_SCRIPT, json.dumps(keys)],
            env=env,
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        assert json.loads(out.stdout) == expected, f"PYTHONHASHSEED={seed}"


def test_key_groups_are_balanced() -> None:
    counts = Counter(subtask_for_key(f"key-{i}", 128, 4) for i in range(100_000))
    assert sorted(counts) == [0, 1, 2, 3]
    for subtask, n in counts.items():
        assert 23_000 <= n <= 27_000, (subtask, n)


@pytest.mark.parametrize(
    ("m", "p", "expected"),
    [
        (128, 4, [range(0, 32), range(32, 64), range(64, 96), range(96, 128)]),
        (128, 3, [range(0, 43), range(43, 86), range(86, 128)]),
        (10, 4, [range(0, 3), range(3, 5), range(5, 8), range(8, 10)]),
        (5, 5, [range(i, i + 1) for i in range(5)]),
        (7, 1, [range(0, 7)]),
    ],
)
def test_key_group_range_exact(m: int, p: int, expected: list[range]) -> None:
    assert [key_group_range(s, m, p) for s in range(p)] == expected


def _check_ranges_agree(m: int, p: int) -> None:
    ranges = [key_group_range(s, m, p) for s in range(p)]
    assert ranges[0].start == 0
    assert ranges[-1].stop == m
    for s, r in enumerate(ranges):
        assert len(r) >= 1
        if s > 0:
            assert r.start == ranges[s - 1].stop
    owner = [subtask_for_key_group(kg, m, p) for kg in range(m)]
    assert owner == [s for s, r in enumerate(ranges) for _ in r]


def test_ranges_agree_exhaustively_for_small_max_parallelism() -> None:
    for m in range(1, 65):
        for p in range(1, m + 1):
            _check_ranges_agree(m, p)


@given(st.integers(1, 32768).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, m))))
def test_ranges_agree_with_subtask_for_key_group(mp: tuple[int, int]) -> None:
    _check_ranges_agree(*mp)


@given(
    st.text(max_size=20),
    st.integers(1, 4096).flatmap(lambda m: st.tuples(st.just(m), st.integers(1, m))),
)
def test_subtask_of_a_key_owns_its_key_group(key: str, mp: tuple[int, int]) -> None:
    m, p = mp
    kg = key_group_for_key(key, m)
    assert kg in key_group_range(subtask_for_key(key, m, p), m, p)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: subtask_for_key_group(0, 4, 5),
            "parallelism must be between 1 and max_parallelism=4, got 5",
        ),
        (
            lambda: subtask_for_key_group(0, 4, 0),
            "parallelism must be between 1 and max_parallelism=4, got 0",
        ),
        (lambda: subtask_for_key_group(4, 4, 2), "key group 4 is outside [0, 4)"),
        (lambda: key_group_range(2, 4, 2), "subtask 2 is outside [0, 2)"),
        (lambda: key_group_for_key("a", 0), "max_parallelism must be >= 1, got 0"),
    ],
)
def test_bad_arguments(call: Any, message: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message
