"""Private copy of the key -> key group -> subtask formula (netlayer must not import streamer).

Must agree with ``streamer.graph.keygroups`` (a test checks it):
``kg = zlib.crc32(key_bytes) % max_parallelism``, ``subtask = kg * parallelism // max_parallelism``
with key_bytes UTF-8 for ``str``, the bytes for bytes-likes, the decimal ASCII for ``int``
(not ``bool``), otherwise ``orjson.dumps(key, option=OPT_SORT_KEYS)``. Never ``hash()``.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

__all__ = ["DEFAULT_MAX_PARALLELISM", "key_group", "key_to_bytes", "subtask_for_key_group"]

DEFAULT_MAX_PARALLELISM = 128
_crc32 = zlib.crc32


def key_to_bytes(key: Any) -> bytes:
    """Canonical bytes of a key (see the module docstring)."""
    if type(key) is str:
        return key.encode("utf-8")
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


def key_group(key: Any, max_parallelism: int) -> int:
    """``zlib.crc32(key_to_bytes(key)) % max_parallelism``."""
    if type(key) is str:
        return _crc32(key.encode("utf-8")) % max_parallelism
    return _crc32(key_to_bytes(key)) % max_parallelism


def subtask_for_key_group(kg: int, max_parallelism: int, parallelism: int) -> int:
    """``kg * parallelism // max_parallelism``."""
    return kg * parallelism // max_parallelism
