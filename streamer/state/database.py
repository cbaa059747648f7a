"""The rocksdict database of one keyed state backend, and its metadata record.

Internal to `streamer.state`; the byte layout is described in
`streamer.state.keyed`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import rocksdict

from streamer.state._layout import MAX_STATES, META_KEY, SNAPSHOT_FORMAT, StateKind
from streamer.state.errors import StateError

__all__ = ["StateDatabase"]


class StateDatabase:
    """An open ``Rdict``, the key groups it holds, and the states registered in it.

    Owns the ``Rdict``: `close` closes it. Keeps the registry of state names
    (name -> stable id and kind) and persists it, with ``max_parallelism``
    and the key-group range, in the metadata record (`META_KEY`) on every
    change, so ids survive snapshots and restores. Takes consistent copies of
    the database (`snapshot`).

    Made by `streamer.state.restore` (`open_database`, `restore_database`),
    which validate an existing metadata record; the constructor trusts its
    arguments. Threading: the owning task's thread only, like the backend.
    """

    def __init__(
        self,
        db: rocksdict.Rdict,
        path: Path,
        max_parallelism: int,
        key_groups: range,
        states: dict[str, tuple[int, StateKind]],
    ) -> None:
        self.db: rocksdict.Rdict = db
        self.path = path
        self.max_parallelism = max_parallelism
        self.key_groups = key_groups
        self._states = states
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def close(self) -> None:
        """Close the ``Rdict`` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.db.close()

    # ------------------------------------------------------------------ state registry

    @property
    def state_names(self) -> dict[str, dict[str, Any]]:
        """Registered states: ``{name: {"id": int, "kind": "value" | "map" | "list"}}``."""
        return {name: {"id": sid, "kind": kind} for name, (sid, kind) in self._states.items()}

    def lookup(self, name: str) -> tuple[int, StateKind] | None:
        """``(id, kind)`` of state ``name``, or None when it was never registered."""
        return self._states.get(name)

    def register(self, name: str, kind: StateKind) -> int:
        """The id of state ``name``, registering it (and writing the metadata) when new.

        `StateError` when closed, for a bad name, for a name registered with
        another kind, and past `MAX_STATES` states.
        """
        if self._closed:
            raise StateError("the state backend is closed")
        if not isinstance(name, str) or not name:
            raise StateError(f"a state name must be a non-empty string, got {name!r}")
        known = self._states.get(name)
        if known is not None:
            if known[1] != kind:
                raise StateError(f"state {name!r} is a {known[1]} state, not a {kind} state")
            return known[0]
        sid = max((s for s, _ in self._states.values()), default=-1) + 1
        if sid >= MAX_STATES:
            raise StateError(f"too many states (at most {MAX_STATES})")
        self._states[name] = (sid, kind)
        self.write_meta()
        return sid

    def write_meta(self) -> None:
        """Write the metadata record (format, layout, registered states)."""
        self.db[META_KEY] = orjson.dumps(
            {
                "format": SNAPSHOT_FORMAT,
                "max_parallelism": self.max_parallelism,
                "key_groups": [self.key_groups.start, self.key_groups.stop],
                "states": self.state_names,
            }
        )

    # ------------------------------------------------------------------ snapshots

    def snapshot_metadata(self) -> dict[str, Any]:
        """What `snapshot` returns, without taking a snapshot."""
        return {
            "format": SNAPSHOT_FORMAT,
            "max_parallelism": self.max_parallelism,
            "key_groups": [self.key_groups.start, self.key_groups.stop],
            "state_names": self.state_names,
        }

    def snapshot(self, target_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """A RocksDB checkpoint of the database at ``target_dir`` (must not exist).

        Returns `snapshot_metadata`. See `KeyedStateBackend.snapshot`.
        """
        if self._closed:
            raise StateError("the state backend is closed")
        target = Path(target_dir)
        if target.exists():
            raise StateError(f"snapshot target {target} already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        rocksdict.Checkpoint(self.db).create_checkpoint(str(target))
        return self.snapshot_metadata()
