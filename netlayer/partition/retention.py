"""Retention for lossless single-task recovery (DESIGN.md section 9), pure storage.

A `RetentionStore` is the log of one subpartition: the frames it sent since
the barrier of the last completed checkpoint, followed, while its consumer is
down, by the frames it could not send. It keeps the frame objects the
subpartition built (a buffer's ``bytearray``, an event's ``bytes``), never a
copy. Entries have absolute positions that only grow; for each checkpoint
barrier in the log, ``marks[checkpoint_id]`` is the position right after it,
where a replay from that checkpoint starts.

- `RetentionStore.append` adds an entry (``sent=False``: it never went out; a
  replay counts it as a first send).
- `RetentionStore.trim` (checkpoint n completed) releases every entry up to and
  including barrier n and forgets older marks. If barrier n is not in the log
  yet, it is released as soon as it is appended.
- A `RetentionBudget`, one per task, bounds the memory of all its stores
  together. Past ``max_bytes`` the stores holding the most memory move their
  oldest entries to a spill file each in ``spill_dir`` (written with
  ``os.pwrite``, read back with ``os.pread``: local disk, on the event loop;
the directory is created when first needed),
  down to a low-water mark. Past ``max_spill_bytes`` on disk (or without a
  ``spill_dir``) the store that should spill *overflows*: it releases
  everything, holds no replayable history (`RetentionStore.gap`), calls its
  ``on_overflow`` and keeps nothing until the next barrier is appended.

A replay (`netlayer.partition.replay`) reads entries by position; while it
runs the store is ``pinned`` at the replay's next position and never releases
an entry from there on, nor one that was never sent.

Single-threaded: the owning subpartition calls it on the task's event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path

from netlayer.events import KIND_CHECKPOINT_BARRIER
from netlayer.protocol.frames import FRAME_HEADER_SIZE

__all__ = [
    "DEFAULT_MAX_SPILL_BYTES",
    "DEFAULT_RETENTION_BYTES",
    "EVENT",
    "GAP_DROPPED",
    "GAP_OVERFLOW",
    "GAP_RESET",
    "RetentionBudget",
    "RetentionStore",
]

log = logging.getLogger(__name__)

DEFAULT_RETENTION_BYTES = 64 << 20
DEFAULT_MAX_SPILL_BYTES = 1 << 30
EVENT = -1
"""``n_records`` of an entry that is an event frame."""
GAP_OVERFLOW = "retention overflowed"
GAP_DROPPED = "records were dropped while the consumer was down"
GAP_RESET = "the subpartition was reset without a replay since"

_KIND_OFFSET = FRAME_HEADER_SIZE + 8  # an event frame: header, u64 seq, u8 kind, payload
_CHECKPOINT_ID = struct.Struct(">q")
_COMPACT = 1024  # drop released list slots once this many accumulated

Frame = bytes | bytearray
Entry = tuple[Frame, int] | tuple[int, int, int]
"""In memory: ``(frame, n_records)``; spilled: ``(file_offset, length, n_records)``."""
OnOverflow = Callable[[int], None]
"""``on_overflow(unsent_records)``: the store gave up; it released that many never-sent records."""


def barrier_id(frame: Frame) -> int | None:
    """The checkpoint id of a `CheckpointBarrier` event frame, else ``None``."""
    if frame[_KIND_OFFSET] != KIND_CHECKPOINT_BARRIER:
        return None
    checkpoint_id: int = _CHECKPOINT_ID.unpack_from(frame, _KIND_OFFSET + 1)[0]
    return checkpoint_id


class RetentionBudget:
    """The bounds one task's retention stores share (see the module docstring).

    ``max_bytes``: frames held in memory by all stores together;
    ``spill_dir``: where stores spill past it (``None``: never, overflow
    instead); ``max_spill_bytes``: their spill files together.
    """

    def __init__(
        self,
        max_bytes: int = DEFAULT_RETENTION_BYTES,
        *,
        spill_dir: str | os.PathLike[str] | None = None,
        max_spill_bytes: int = DEFAULT_MAX_SPILL_BYTES,
    ) -> None:
        if max_bytes < 0 or max_spill_bytes < 0:
            raise ValueError("retention bounds must be >= 0")
        self.max_bytes = max_bytes
        self.spill_dir = None if spill_dir is None else Path(spill_dir)
        self.max_spill_bytes = max_spill_bytes
        self.low_water = max_bytes - max_bytes // 16
        """Spilling goes down to this, so it happens in batches, not once per frame."""
        self.memory_bytes = 0
        self.disk_bytes = 0
        self._stores: dict[int, RetentionStore] = {}

    def __repr__(self) -> str:
        return (
            f"<RetentionBudget memory={self.memory_bytes}/{self.max_bytes} "
            f"disk={self.disk_bytes}/{self.max_spill_bytes} stores={len(self._stores)}>"
        )

    def store(self, name: str, on_overflow: OnOverflow | None = None) -> RetentionStore:
        """A new store under this budget (``name`` shows in logs and its spill file's name)."""
        store = RetentionStore(self, name, on_overflow)
        self._stores[id(store)] = store
        return store

    def _relieve(self) -> None:
        """Memory is over ``max_bytes``: spill (or overflow) the largest holders first."""
        for store in sorted(self._stores.values(), key=lambda s: -s.memory_bytes):
            if self.memory_bytes <= self.low_water:
                return
            store._spill_down_to(self.low_water)

    def _forget(self, store: RetentionStore) -> None:
        self._stores.pop(id(store), None)


class RetentionStore:
    """The retained frames of one subpartition (see the module docstring)."""

    def __init__(self, budget: RetentionBudget, name: str, on_overflow: OnOverflow | None) -> None:
        self.budget = budget
        self.name = name
        self.on_overflow = on_overflow
        self.marks: dict[int, int] = {}
        """``checkpoint_id -> position`` right after that checkpoint's barrier."""
        self.unsent_from = 0
        """Entries from this position on were never sent."""
        self.pinned: int | None = None
        """A replay still reads entries from this position on."""
        self.gap: str | None = None
        """Why no retained history can be replayed (until the next barrier), or ``None``."""
        self.overflows = 0
        self.records = 0
        """Records in the retained buffers."""
        self.bytes = 0
        """Bytes of the retained frames, in memory and spilled."""
        self.memory_bytes = 0
        self.spilled_bytes = 0
        """Size of the spill file (what it takes on disk)."""
        self._log: list[Entry] = []
        self._start = 0  # position of _log[0]
        self._head = 0  # index of the oldest retained entry
        self._mem_from = 0  # index of the oldest entry in memory (those before it are spilled)
        self._pending_trim: int | None = None
        self._fd: int | None = None
        self._path: Path | None = None

    def __repr__(self) -> str:
        return (
            f"<RetentionStore {self.name} [{self.base}, {self.end}) records={self.records} "
            f"memory={self.memory_bytes} spilled={self.spilled_bytes} marks={self.marks}>"
        )

    @property
    def base(self) -> int:
        """Position of the oldest retained entry."""
        return self._start + self._head

    @property
    def end(self) -> int:
        """Position the next appended entry gets."""
        return self._start + len(self._log)

    @property
    def overflowed(self) -> bool:
        """The store gave up on its history (past its bounds) and has not resumed yet."""
        return self.gap == GAP_OVERFLOW

    # -- appending ---------------------------------------------------------------------

    def append(self, frame: Frame, n_records: int, sent: bool = True) -> None:
        """Retain ``frame`` (``n_records`` records, or `EVENT`); it is kept, not copied."""
        checkpoint_id = barrier_id(frame) if n_records == EVENT else None
        if self.gap is not None:
            if checkpoint_id is None:
                return  # nothing before the next barrier could be replayed
            self.gap = None
        self._log.append((frame, n_records))
        size = len(frame)
        self.bytes += size
        self.memory_bytes += size
        if n_records > 0:
            self.records += n_records
        if sent:
            self.unsent_from = self.end
        budget = self.budget
        budget.memory_bytes += size
        if checkpoint_id is not None:
            self._on_barrier(checkpoint_id)
        if budget.memory_bytes > budget.max_bytes:
            budget._relieve()

    def mark_restored(self, checkpoint_id: int) -> None:
        """The producing attempt restored ``checkpoint_id``: everything it appends from
        here follows that checkpoint's barrier, so a replay from it starts here."""
        self._on_barrier(checkpoint_id)

    def _on_barrier(self, checkpoint_id: int) -> None:
        self.marks[checkpoint_id] = self.end
        pending = self._pending_trim
        if pending is not None and checkpoint_id <= pending:
            self.trim(checkpoint_id)

    # -- trimming and reading ----------------------------------------------------------

    def trim(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed: release everything up to its barrier."""
        marks = self.marks
        for c in [c for c in marks if c < checkpoint_id]:
            del marks[c]
        start = marks.get(checkpoint_id)
        if start is None:
            if not any(c > checkpoint_id for c in marks):
                self._pending_trim = checkpoint_id  # its barrier was not retained yet
            return
        if self._pending_trim is not None and self._pending_trim <= checkpoint_id:
            self._pending_trim = None
        self._release_before(start)

    def start_of(self, checkpoint_id: int) -> int | None:
        """Where a replay from ``checkpoint_id`` starts, if its barrier is retained."""
        start = self.marks.get(checkpoint_id)
        return start if start is not None and start >= self.base else None

    def records_at(self, position: int) -> int:
        """``n_records`` of the entry at ``position`` (`EVENT` for an event)."""
        return self._log[position - self._start][-1]

    def is_spilled(self, position: int) -> bool:
        """Whether the entry at ``position`` lives in the spill file (else in memory)."""
        return len(self._log[position - self._start]) == 3

    def frame_at(self, position: int) -> bytearray:
        """The frame at ``position`` as a bytearray the caller may change.

        A frame read back from disk is new; a frame in memory that was sent
        may still be referenced by a transport, so it is copied; one that was
        never sent is handed out as it is (it becomes the sent frame).
        """
        entry = self._log[position - self._start]
        if len(entry) == 3:
            offset, length, _ = entry
            assert self._fd is not None
            return bytearray(os.pread(self._fd, length, offset))
        frame = entry[0]
        assert not isinstance(frame, int)
        if position >= self.unsent_from and type(frame) is bytearray:
            return frame
        return bytearray(frame)

    def unsent_records(self) -> int:
        """Records in retained buffers that were never sent."""
        lo = max(self.unsent_from, self.base) - self._start
        return sum(e[-1] for e in self._log[lo:] if e[-1] > 0)

    def _release_before(self, position: int) -> None:
        limit = min(position, self.unsent_from)
        if self.pinned is not None:
            limit = min(limit, self.pinned)
        stop = limit - self._start
        log_ = self._log
        i = self._head
        budget = self.budget
        while i < stop:
            entry = log_[i]
            n = entry[-1]
            if n > 0:
                self.records -= n
            if len(entry) == 3:
                self.bytes -= entry[1]
            else:
                size = len(entry[0])
                self.bytes -= size
                self.memory_bytes -= size
                budget.memory_bytes -= size
            i += 1
        if i <= self._head:
            return
        self._head = i
        self._mem_from = max(self._mem_from, i)
        if self._mem_from == self._head and self.spilled_bytes:
            self._truncate_spill()  # nothing left on disk
        if self._head >= _COMPACT:
            del log_[: self._head]
            self._start += self._head
            self._mem_from -= self._head
            self._head = 0

    # -- spilling and overflow ---------------------------------------------------------

    def _spill_down_to(self, target: int) -> None:
        """Spill oldest entries in memory until the budget is at ``target`` (or overflow)."""
        budget = self.budget
        log_ = self._log
        while budget.memory_bytes > target and self._mem_from < len(log_):
            frame, n = log_[self._mem_from]  # type: ignore[misc]
            assert not isinstance(frame, int)
            size = len(frame)
            if budget.spill_dir is None or budget.disk_bytes + size > budget.max_spill_bytes:
                self._overflow()
                return
            try:
                offset = self._write(frame)
            except OSError as exc:  # no room on the disk after all (or no directory)
                log.warning("%r: cannot spill to %s: %s", self, budget.spill_dir, exc)
                self._overflow()
                return
            log_[self._mem_from] = (offset, size, n)
            self._mem_from += 1
            self.memory_bytes -= size
            budget.memory_bytes -= size

    def _write(self, frame: Frame) -> int:
        if self._fd is None:
            spill_dir = self.budget.spill_dir
            assert spill_dir is not None
            spill_dir.mkdir(parents=True, exist_ok=True)
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name)
            fd, path = tempfile.mkstemp(prefix=f"{safe}-", suffix=".spill", dir=spill_dir)
            self._fd, self._path = fd, Path(path)
        offset = self.spilled_bytes
        view = memoryview(frame)
        written = 0
        try:
            while written < len(view):
                written += os.pwrite(self._fd, view[written:], offset + written)
        except OSError:
            os.ftruncate(self._fd, offset)  # (a partial write is not counted)
            raise
        self.spilled_bytes += len(frame)
        self.budget.disk_bytes += len(frame)
        return offset

    def _truncate_spill(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
        self.budget.disk_bytes -= self.spilled_bytes
        self.spilled_bytes = 0

    def _overflow(self) -> None:
        unsent = self.unsent_records()
        self.overflows += 1
        # a bound too small for the steady rate overflows once per checkpoint: say so
        # the first time, then every 100th
        level = logging.WARNING if self.overflows % 100 == 1 else logging.DEBUG
        log.log(
            level,
            "%r: retention past its bounds (%r); giving up its history (overflow %d)",
            self, self.budget, self.overflows,
        )  # fmt: skip
        self.clear(GAP_OVERFLOW)
        if self.on_overflow is not None:
            self.on_overflow(unsent)

    def clear(self, gap: str | None = None) -> None:
        """Release everything; ``gap``: why nothing retained so far can be replayed any more.

        With a ``gap`` the store keeps nothing until the next barrier; without
        one (a reset by a consumer that replays nothing) it retains again at once.
        """
        budget = self.budget
        budget.memory_bytes -= self.memory_bytes
        if self.spilled_bytes:
            self._truncate_spill()
        self._start = self.end
        self._log = []
        self._head = self._mem_from = 0
        self.unsent_from = self._start
        self.pinned = None
        self.marks.clear()
        self._pending_trim = None
        self.records = self.bytes = self.memory_bytes = 0
        self.gap = gap

    def release(self) -> None:
        """Free everything for good: the subpartition is done (its partition closed)."""
        self.clear()
        self.budget._forget(self)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            self._path = None
