"""Byte layout of keyed state: key and value encodings, metadata, constants.

Internal to `streamer.state`; the layout itself is described in
`streamer.state.keyed`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import orjson
import rocksdict

from streamer.state.errors import StateError

SNAPSHOT_FORMAT: Final = 1
"""Version of the key/value layout and of the snapshot metadata."""

MAX_MAX_PARALLELISM: Final = 0xFFFF
"""Key groups are 2 bytes and key group 0xFFFF holds the metadata record."""

StateKind = Literal["value", "map", "list"]
Clock = Callable[[], int]

META_KEY: Final = b"\xff\xffmeta"
MAX_STATES: Final = 0xFFFF
PLAIN: Final = 0
EXPIRING: Final = 1
SEQ_MAX: Final = b"\xff" * 8
BATCH: Final = 10_000
KINDS: Final = ("value", "map", "list")


def wall_clock_ms() -> int:
    """Milliseconds since the epoch: the default TTL clock."""
    return time.time_ns() // 1_000_000


class Absent:
    """Marker for an entry that is missing or expired."""


ABSENT: Final = Absent()


def rocks_options() -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    opts.create_if_missing(True)
    return opts


def successor(prefix: bytes) -> bytes:
    """The smallest byte string greater than every string starting with ``prefix``."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        raise ValueError("prefix of 0xff bytes has no successor")
    return stripped[:-1] + bytes([stripped[-1] + 1])


def encode_value(value: Any, expiry_ms: int | None) -> bytes:
    """Header byte, optional 8-byte expiry, orjson body; ``TypeError`` if not serializable."""
    try:
        body = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"cannot store {type(value).__name__} in keyed state: {exc}") from None
    if expiry_ms is None:
        return b"\x00" + body
    return b"\x01" + expiry_ms.to_bytes(8, "big") + body


def check_layout(max_parallelism: int, key_groups: range) -> None:
    if not isinstance(max_parallelism, int) or not 1 <= max_parallelism <= MAX_MAX_PARALLELISM:
        raise StateError(
            f"max_parallelism must be between 1 and {MAX_MAX_PARALLELISM}, got {max_parallelism!r}"
        )
    if not isinstance(key_groups, range) or key_groups.step != 1:
        raise StateError(f"key_groups must be a range with step 1, got {key_groups!r}")
    if not 0 <= key_groups.start < key_groups.stop <= max_parallelism:
        raise StateError(
            f"key_groups [{key_groups.start}, {key_groups.stop}) must be a non-empty part "
            f"of [0, {max_parallelism})"
        )


def parse_meta(raw: bytes, where: Path) -> dict[str, Any]:
    try:
        meta = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"{where}: corrupt state metadata record: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else meta
        raise StateError(
            f"{where}: unsupported state format {found!r} (this version reads {SNAPSHOT_FORMAT})"
        )
    return meta


def states_from_meta(meta: Mapping[str, Any], where: Path) -> dict[str, tuple[int, StateKind]]:
    states: dict[str, tuple[int, StateKind]] = {}
    raw_states = meta.get("states", {})
    if not isinstance(raw_states, dict):
        raise StateError(f"{where}: corrupt state metadata: 'states' is not an object")
    for name, entry in raw_states.items():
        sid = entry.get("id") if isinstance(entry, dict) else None
        kind = entry.get("kind") if isinstance(entry, dict) else None
        if not isinstance(sid, int) or not 0 <= sid < MAX_STATES or kind not in KINDS:
            raise StateError(f"{where}: corrupt state metadata for state {name!r}: {entry!r}")
        states[name] = (sid, kind)
    return states


def check_ttl(ttl_ms: int | None) -> None:
    if ttl_ms is not None and (not isinstance(ttl_ms, int) or ttl_ms <= 0):
        raise StateError(
            f"ttl_ms must be a positive number of milliseconds or None, got {ttl_ms!r}"
        )


def link_or_copy(src: str, dst: str) -> object:
    """Hard-link immutable SST files (RocksDB never rewrites them), copy the rest."""
    if src.endswith(".sst"):
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass
    return shutil.copy2(src, dst)


def require_fresh_dir(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise StateError(
            f"cannot restore state into {path}: it exists and is not an empty directory"
        )
