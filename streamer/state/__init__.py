"""Keyed state on rocksdict, checkpoint storage and savepoints.

- `KeyedStateBackend` (`streamer.state.keyed`): one task's keyed state with
  `ValueState` / `MapState` / `ListState` handles, TTL, snapshots and
  key-group-filtered restore (rescaling).
- `CheckpointStorage` (`streamer.state.storage`): completed checkpoints and
  savepoints as directories with a signed manifest, written atomically.

Behind them: `database` (the ``Rdict`` and its state registry), `access` (the
current key, what the handles use), `restore` (opening, restoring, rescaling)
and `_layout` (byte layout) for keyed state; `manifest` (names, manifest
building and validation), `snapshot_writer` (`PendingCheckpoint`,
`TaskSnapshotWriter`) and `_files` (durable writes) for checkpoint storage.
"""

from streamer.state.errors import CorruptCheckpointError, KeyGroupOutOfRangeError, StateError
from streamer.state.handles import ListState, MapState, ValueState
from streamer.state.keyed import (
    MAX_MAX_PARALLELISM,
    SNAPSHOT_FORMAT,
    KeyedStateBackend,
    StateKind,
    wall_clock_ms,
)
from streamer.state.storage import (
    CheckpointStorage,
    CompletedCheckpoint,
    PendingCheckpoint,
    RecoveryChoice,
    SkippedCheckpoint,
)

__all__ = [
    "MAX_MAX_PARALLELISM",
    "SNAPSHOT_FORMAT",
    "CheckpointStorage",
    "CompletedCheckpoint",
    "CorruptCheckpointError",
    "KeyGroupOutOfRangeError",
    "KeyedStateBackend",
    "ListState",
    "MapState",
    "PendingCheckpoint",
    "RecoveryChoice",
    "SkippedCheckpoint",
    "StateError",
    "StateKind",
    "ValueState",
    "wall_clock_ms",
]
