"""Keys -> key groups -> subtasks.

A key is turned into bytes (`key_to_bytes`), the bytes into a key group
(``crc32(bytes) % max_parallelism``) and the key group into a subtask
(``kg * parallelism // max_parallelism``, Flink's formula). Every step is a
pure function of its arguments, so every process (whatever its
``PYTHONHASHSEED``) routes a key to the same subtask. Python's ``hash()`` is
never used: it is salted per process.

A subtask owns a contiguous range of key groups (`key_group_range`); keyed
state is stored by key group, so it can be split again on a rescale.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

__all__ = [
    "DEFAULT_MAX_PARALLELISM",
    "check_parallelism",
    "key_group_for_key",
    "key_group_range",
    "key_to_bytes",
    "subtask_for_key",
    "subtask_for_key_group",
]

DEFAULT_MAX_PARALLELISM = 128
"""Number of key groups of a job unless configured otherwise (also the parallelism cap)."""


def key_to_bytes(key: Any) -> bytes:
    """The canonical bytes of a key.

    - ``str``: its UTF-8 encoding;
    - ``bytes`` / ``bytearray`` / ``memoryview``: the bytes as they are;
    - ``int`` (not ``bool``): its decimal ASCII form, so ``42`` and ``"42"``
      share a key group;
    - anything else (``bool``, ``None``, ``float``, tuples, lists, dicts, ...):
      ``orjson.dumps(key, option=OPT_SORT_KEYS)``, so dict key order does not
      matter and a tuple equals the list with the same items.

    Raises ``TypeError`` for a value orjson cannot serialize.
    """
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key).encode("ascii")
    try:
        return orjson.dumps(key, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"cannot use {type(key).__name__} as a key: {exc}") from None


def check_parallelism(max_parallelism: int, parallelism: int) -> None:
    """Raise ``ValueError`` unless ``1 <= parallelism <= max_parallelism``."""
    if max_parallelism < 1:
        raise ValueError(f"max_parallelism must be >= 1, got {max_parallelism}")
    if not 1 <= parallelism <= max_parallelism:
        raise ValueError(
            f"parallelism must be between 1 and max_parallelism={max_parallelism}, "
            f"got {parallelism}"
        )


def key_group_for_key(key: Any, max_parallelism: int) -> int:
    """The key group of ``key``: ``zlib.crc32(key_to_bytes(key)) % max_parallelism``."""
    if max_parallelism < 1:
        raise ValueError(f"max_parallelism must be >= 1, got {max_parallelism}")
    return zlib.crc32(key_to_bytes(key)) % max_parallelism


def subtask_for_key_group(key_group: int, max_parallelism: int, parallelism: int) -> int:
    """The subtask owning ``key_group``: ``key_group * parallelism // max_parallelism``."""
    check_parallelism(max_parallelism, parallelism)
    if not 0 <= key_group < max_parallelism:
        raise ValueError(f"key group {key_group} is outside [0, {max_parallelism})")
    return key_group * parallelism // max_parallelism


def key_group_range(subtask: int, max_parallelism: int, parallelism: int) -> range:
    """The key groups ``subtask`` owns, a non-empty contiguous range.

    Exactly the ``kg`` with ``subtask_for_key_group(kg, ...) == subtask``: the
    ranges of subtasks ``0..parallelism-1`` partition ``range(max_parallelism)``
    in order.
    """
    check_parallelism(max_parallelism, parallelism)
    if not 0 <= subtask < parallelism:
        raise ValueError(f"subtask {subtask} is outside [0, {parallelism})")
    # kg * p // m == s  <=>  s * m <= kg * p < (s + 1) * m
    start = -(-subtask * max_parallelism // parallelism)
    stop = -(-(subtask + 1) * max_parallelism // parallelism)
    return range(start, stop)


def subtask_for_key(key: Any, max_parallelism: int, parallelism: int) -> int:
    """The subtask a keyed record goes to (key -> key group -> subtask)."""
    return subtask_for_key_group(
        key_group_for_key(key, max_parallelism), max_parallelism, parallelism
    )
