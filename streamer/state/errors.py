"""Errors raised by keyed state and checkpoint storage."""

from __future__ import annotations

from pathlib import Path

from streamer.errors import StreamerError

__all__ = ["CorruptCheckpointError", "KeyGroupOutOfRangeError", "StateError"]


class StateError(StreamerError):
    """Keyed state or a snapshot cannot be used as asked (wrong layout, closed, mismatch)."""


class KeyGroupOutOfRangeError(StateError, ValueError):
    """A key belongs to a key group this task's state backend does not own."""


class CorruptCheckpointError(StateError):
    """A checkpoint or savepoint directory failed validation.

    ``reason`` is a short phrase such as ``"task count#1 file keyed/000009.sst:
    checksum mismatch"``; ``path`` is the directory that was checked.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
