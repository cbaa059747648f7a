"""The keyed multi-stream interval join (operator kind ``join``).

Semantics (those of ``KeyedStream.interval_join``): inputs ``0..k-1`` are keyed
by the same key. A record of input 0 (the *anchor*) with timestamp ``t``
matches, on EVERY other input ``i``, the records with the same key whose
timestamps lie in ``[t + lower_ms, t + upper_ms]``. Each complete combination
(one record per input) is emitted exactly once, as ``fn(r0, ..., rk-1)`` or the
list ``[r0, ..., rk-1]`` without ``fn``, as soon as it is complete, i.e. while
processing its last member (whichever input that is), with timestamp = the max
of its members' timestamps.

Records are buffered per key and input in a `JoinState` (`DictJoinState` in
memory; a RocksDB version implements the same protocol) and expired by
watermark.

Late records
------------
With watermark ``wm`` (no record with ``ts <= wm`` follows), a record with
``ts <= wm`` is *late*: counted in ``metrics.late_records[input]``, handed to
``on_late(input_index, record, ts)`` if set, and not joined.

Expiry rule (exact)
-------------------
Let ``L = lower_ms``, ``U = upper_ms`` (``L <= U``, either may be negative)
and ``wm`` the current watermark. Every record that can still arrive (and is
not late) has ``ts > wm``. A buffered record is *needed* iff some combination
containing it can still be completed: one whose members are buffered or may
still arrive (any ``ts > wm``), at least one still to arrive, with timestamps
meeting the join condition. A record not needed is dropped, or not buffered at
all. Worked out:

* **Anchor** (input 0) at ``t0``: needed iff ``t0 + U > wm``. Its partners lie in
  ``[t0+L, t0+U]``; a partner can still arrive iff that range holds a time
  ``> wm``, and then every other partner may arrive too.
* **Other input** ``j > 0`` at ``t``: its anchors lie in ``[t-U, t-L]``. Needed iff

  (a) an anchor may still arrive with which every other input can still be
      completed. With ``k == 2``: iff ``t - L > wm``. With ``k >= 3`` the
      members of the other inputs for anchor ``t0`` can still arrive iff
      ``t0 + U > wm``; taking the largest anchor ``t0 = t - L``:
      iff ``t - L + min(0, U) > wm``; or
  (a3) (``k >= 3``, ``U < 0``, where (a) fails) an anchor ``t0`` may still arrive
      (``wm < t0 <= t - L``, ``t0 >= t - U``) whose members on every input but 0
      and ``j`` are already buffered (the range ``[t0+L, t0+U]`` is all ``<= wm``);
      or
  (b) (``k >= 3``) a buffered anchor lies in ``[t-U, t-L]``: buffered anchors
      are the needed ones (``t0 + U > wm``), so the inputs other than 0 and
      ``j`` may still deliver members. (With ``k == 2`` and the anchor here the
      combination is complete and was emitted.)

A fresh record (``ts > wm``) that is needed is always needed by the anchor
rule, (a) or (b), never only by (a3). A record of input ``j > 0`` is kept at
most until ``wm >= t - L + max(0, U)`` (``t - L`` with two inputs), an anchor
until ``wm >= t0 + U``. Neededness is decided on the buffer as it was before a
visit (a combination that makes one record needed makes all its members
needed, so this is consistent).

Why it is right: neededness only decreases as the watermark rises and
records arrive (an arriving record was one of the "may still arrive"
already), so a dropped record is never wanted again. When the last member of
a combination arrives (not late, so after every earlier watermark), each
other member was needed at every watermark before (this combination shows
it), hence is still buffered: the combination is found and emitted, once, as
the new record occurs in it once. Tested against a brute-force oracle of the
definition (``tests/unit/test_join.py``: the buffer equals the needed set after
every event).

Expiry timers: the operator keeps, per key with buffered records, the next
watermark at which something of that key may stop being needed: the min over
its anchors of ``t0 + U``, over its records held by (a) of the bound in (a),
over those held by (a3) of the largest such anchor ``t0`` (records held by (b)
are revisited when their anchors expire). On a watermark it visits the keys
due (``time <= wm``), applies the rule to all their records and re-arms them.
The index lives in memory, one entry per key (``_due``) plus a heap, and is
rebuilt from one `JoinState.entries` scan on restore.
"""

from __future__ import annotations

import heapq
import itertools
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from streamer.errors import StreamerError
from streamer.graph import OperatorSpec
from streamer.runtime.eventtime import MIN_WATERMARK
from streamer.runtime.operators import ChainedOperator

__all__ = [
    "DictJoinState",
    "IntervalJoinOperator",
    "JoinMetrics",
    "JoinState",
    "MissingTimestampError",
]


class MissingTimestampError(StreamerError, ValueError):
    """A record reached an event-time operator without an event timestamp."""


class JoinState(Protocol):
    """Buffered join records, per key, input and timestamp.

    All methods but `keys`, `snapshot` and `restore` act on the *current key*
    (`set_current_key`). Records of one key and input with the same timestamp
    form a *bucket*, in arrival order; the join only ever removes whole buckets
    (the expiry rule depends on the timestamp alone).

    A RocksDB implementation maps this onto one ``MapState`` per operator, with
    map key ``(input_index, ts)`` (encoded as the MapState needs, e.g. ``[i, ts]``
    or ``f"{i}:{ts}"``) and value the list of records (JSON-able):

    * `set_current_key` -> ``backend.set_current_key(key)``;
    * `add` -> ``get((i, ts))`` then ``put((i, ts), records + [record])``;
    * `buckets(i)` -> ``items()`` filtered to map keys with input ``i``;
      any order (the join does not rely on order, but an order stable across
      snapshot/restore makes emission order reproducible); it may return a list
      (the join never writes while it iterates, but materializes when unsure);
    * `remove(i, ts)` -> ``remove((i, ts))``;
    * `keys` -> every key that has at least one bucket, over the whole state
      (only called by ``restore_state`` to rebuild the expiry index, so a
      full scan is fine);
    * `snapshot`/`restore`: the state is checkpointed with the database, so
      these may return ``{}`` and do nothing.
    """

    copies_records: bool
    """True: `buckets` hands out the state's own record objects, so the join copies
    what it emits (a function that changes its arguments must not change the state)."""

    def set_current_key(self, key: Any) -> None: ...

    def add(self, input_index: int, ts: int, record: Any) -> None:
        """Append ``record`` to the bucket ``(input_index, ts)`` of the current key."""
        ...

    def buckets(
        self, input_index: int, lo: int | None = None, hi: int | None = None
    ) -> Iterable[tuple[int, list[Any]]]:
        """``(ts, records)`` for every bucket of the current key and ``input_index``
        with ``lo <= ts <= hi`` (``None``: unbounded), in ascending ``ts``.

        The cost is that of the buckets in range, not of the key's whole state: the
        join asks for the window of one event. It does not add or remove while
        iterating.
        """
        ...

    def remove(self, input_index: int, ts: int) -> None:
        """Drop the bucket ``(input_index, ts)`` of the current key (no-op if absent)."""
        ...

    def keys(self) -> Iterable[Any]:
        """All keys with at least one bucket."""
        ...

    def entries(self) -> Iterable[tuple[Any, int, int, list[Any]]]:
        """``(key, input_index, ts, records)`` of every bucket of every key, in one
        pass (ignores the current key; used to rebuild the expiry index)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy of the whole state (``{}`` if checkpointed elsewhere)."""
        ...

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Replace the whole state by a `snapshot` result."""
        ...


class DictJoinState:
    """`JoinState` in plain dicts: key -> input -> ts -> records (insertion ordered).

    Its records are shared with the function (``copies_records`` is False, as in
    the tests' oracle runs); the runtime keeps state in `RocksJoinState`."""

    copies_records = False

    def __init__(self, n_inputs: int) -> None:
        self.n_inputs = n_inputs
        self._data: dict[Any, list[dict[int, list[Any]]]] = {}
        self._key: Any = None
        self._cur: list[dict[int, list[Any]]] | None = None

    def set_current_key(self, key: Any) -> None:
        self._key = key
        self._cur = self._data.get(key)

    def add(self, input_index: int, ts: int, record: Any) -> None:
        self.append(input_index, ts, record)

    def _current(self) -> list[dict[int, list[Any]]]:
        """The current key's buckets per input, created empty if it has none."""
        cur = self._cur
        if cur is None:
            cur = self._cur = self._data[self._key] = [{} for _ in range(self.n_inputs)]
        return cur

    def append(self, input_index: int, ts: int, record: Any) -> list[Any]:
        """`add`, returning the bucket (this state's own list)."""
        cur = self._current()
        bucket = cur[input_index].get(ts)
        if bucket is None:
            bucket = cur[input_index][ts] = [record]
        else:
            bucket.append(record)
        return bucket

    def add_bucket(self, input_index: int, ts: int, records: list[Any]) -> None:
        """Set the current key's bucket ``(input_index, ts)`` to ``records``."""
        self._current()[input_index][ts] = records

    def buckets(
        self, input_index: int, lo: int | None = None, hi: int | None = None
    ) -> Iterable[tuple[int, list[Any]]]:
        cur = self._cur
        if cur is None:
            return ()
        per = cur[input_index]
        return sorted(
            (ts, recs)
            for ts, recs in per.items()
            if (lo is None or ts >= lo) and (hi is None or ts <= hi)
        )

    def remove(self, input_index: int, ts: int) -> None:
        cur = self._cur
        if cur is None:
            return
        cur[input_index].pop(ts, None)
        if not any(cur):
            del self._data[self._key]
            self._cur = None

    def is_empty(self) -> bool:
        return self._cur is None

    def keys(self) -> Iterable[Any]:
        return self._data.keys()

    def entries(self) -> Iterable[tuple[Any, int, int, list[Any]]]:
        return [
            (key, i, ts, recs)
            for key, per in self._data.items()
            for i, d in enumerate(per)
            for ts, recs in d.items()
        ]

    def load(self, entries: Iterable[tuple[Any, int, int, list[Any]]]) -> None:
        """Add whole buckets (e.g. another state's `entries`)."""
        for key, i, ts, recs in entries:
            per = self._data.get(key)
            if per is None:
                per = self._data[key] = [{} for _ in range(self.n_inputs)]
            per[i].setdefault(ts, []).extend(recs)
        self._cur = self._data.get(self._key)

    def __len__(self) -> int:
        """Number of buffered records (all keys)."""
        return sum(
            len(b) for per_input in self._data.values() for d in per_input for b in d.values()
        )

    def snapshot(self) -> dict[str, Any]:
        """``{"inputs": k, "keys": [[key, [[input, ts, [records...]], ...]], ...]}``.

        JSON-able if keys and records are; order preserved. JSON turns tuples
        into lists: `restore` turns list keys back into tuples (records stay as
        JSON gives them, as they do over the network).
        """
        return {
            "inputs": self.n_inputs,
            "keys": [
                [key, [[i, ts, list(recs)] for i, d in enumerate(per) for ts, recs in d.items()]]
                for key, per in self._data.items()
            ],
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        n = int(snapshot.get("inputs", self.n_inputs))
        if n != self.n_inputs:
            raise ValueError(f"join state snapshot has {n} inputs, the operator {self.n_inputs}")
        self._data = {}
        self._key = None
        self._cur = None
        self.load(
            (_hashable(key), int(i), int(ts), recs)
            for key, entries in snapshot.get("keys", [])
            for i, ts, recs in entries
            if recs
        )


def _copy(records: list[Any]) -> list[Any]:
    """A deep copy of records a state stored as JSON (`RocksJoinState` refuses
    anything else when it writes them)."""
    return orjson.loads(orjson.dumps(records))  # type: ignore[no-any-return]


def _hashable(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


@dataclass
class JoinMetrics:
    """Counters of one join operator.

    * ``late_records[i]``: records of input ``i`` dropped as late;
    * ``records_joined``: non-late records taken into the join (probed against
      the buffer), all inputs;
    * ``results_emitted``: combinations emitted;
    * ``records_expired``: records that left the buffer by watermark, or were not
      buffered at all because no future combination could include them;
    * ``state_size``: records buffered now.

    Invariant: ``records_joined == state_size + records_expired``.
    """

    late_records: list[int] = field(default_factory=list)
    records_joined: int = 0
    results_emitted: int = 0
    records_expired: int = 0
    state_size: int = 0


LateCallback = Callable[[int, Any, int], None]


class IntervalJoinOperator(ChainedOperator):
    """Keyed interval join of ``len(key_fns)`` inputs (see the module doc).

    ``process(value, ts, input_index)`` joins ``value`` and emits the completed
    combinations through ``self.output.collect``; ``on_watermark(wm)`` expires
    state (it emits nothing; the task forwards watermarks). ``on_late`` (settable)
    receives late records as ``on_late(input_index, record, ts)``.
    """

    def __init__(
        self,
        spec: OperatorSpec,
        fn: Callable[..., Any] | None,
        key_fns: list[Callable[[Any], Any]],
        lower_ms: int,
        upper_ms: int,
        state: JoinState | None = None,
        on_late: LateCallback | None = None,
    ) -> None:
        super().__init__(spec)
        if len(key_fns) < 2:
            raise ValueError(f"interval join '{spec.name}' needs >= 2 inputs, got {len(key_fns)}")
        if lower_ms > upper_ms:
            raise ValueError(
                f"interval join '{spec.name}' needs lower_ms <= upper_ms, "
                f"got {lower_ms} > {upper_ms}"
            )
        self.fn = fn
        self.key_fns = key_fns
        self.n_inputs = len(key_fns)
        self.lower_ms = lower_ms
        self.upper_ms = upper_ms
        self.state: JoinState = DictJoinState(self.n_inputs) if state is None else state
        self._copy_records = self.state.copies_records
        self.on_late = on_late
        self.metrics = JoinMetrics(late_records=[0] * self.n_inputs)
        self._watermark = MIN_WATERMARK
        # expiry index: key -> next due watermark; heap of (time, seq, key), lazily invalidated
        self._due: dict[Any, int] = {}
        self._heap: list[tuple[int, int, Any]] = []
        self._seq = itertools.count()

    @classmethod
    def from_spec(
        cls,
        spec: OperatorSpec,
        fn: Callable[..., Any] | None,
        key_fns: list[Callable[[Any], Any]],
        state: JoinState | None = None,
    ) -> IntervalJoinOperator:
        """Build from a ``join`` spec (config ``lower_ms``, ``upper_ms``, ``has_fn``)."""
        config = spec.config
        return cls(
            spec,
            fn if config.get("has_fn", True) else None,
            key_fns,
            int(config["lower_ms"]),
            int(config["upper_ms"]),
            state,
        )

    @property
    def watermark(self) -> int:
        """The largest watermark seen (`MIN_WATERMARK` at first)."""
        return self._watermark

    # ------------------------------------------------------------ records
    def process(self, value: Any, ts: int | None, input_index: int) -> None:
        if ts is None:
            raise MissingTimestampError(
                f"interval join '{self.spec.name}': a record on input {input_index} has no "
                f"event timestamp; give the source of input {input_index} a timestamp assigner"
            )
        if ts <= self._watermark:
            self.metrics.late_records[input_index] += 1
            if self.on_late is not None:
                self.on_late(input_index, value, ts)
            return
        key = self.key_fns[input_index](value)
        state = self.state
        state.set_current_key(key)
        self.metrics.records_joined += 1
        lo, hi, wm = self.lower_ms, self.upper_ms, self._watermark
        if input_index == 0:
            self._emit_all(self._product_for_anchor(ts, [value], None))
            due = ts + hi
            needed = due > wm
        else:
            anchors = list(state.buckets(0, ts - hi, ts - lo))
            for t0, recs in anchors:
                self._emit_all(self._product_for_anchor(t0, recs, (input_index, ts, value)))
            # a fresh record (ts > wm) is needed by (a) iff due > wm; rule (a3) cannot
            # apply to it (it needs t0 + U <= wm with t0 >= ts - U > wm - U)
            due = self._future_anchor_until(ts)
            needed = due > wm or (self.n_inputs >= 3 and bool(anchors))
            # held by (b) only: the anchors' own expiry (t0 + U) revisits the key
        if needed:
            state.add(input_index, ts, value)
            self.metrics.state_size += 1
            if due > wm:
                self._arm(key, due)
        else:
            self.metrics.records_expired += 1

    def _future_anchor_until(self, t: int) -> int:
        """Rule (a): a record of input j > 0 at ``t`` may meet a future anchor while ``wm <`` this.

        ``t - L`` with two inputs; with three or more ``t - L + min(0, U)``: the
        other inputs' members of a future anchor ``t0`` may still arrive iff
        ``t0 + U > wm``, and the largest anchor is ``t0 = t - L``.
        """
        if self.n_inputs == 2:
            return t - self.lower_ms
        return t - self.lower_ms + min(0, self.upper_ms)

    def _product_for_anchor(
        self, t0: int, anchors: list[Any], fixed: tuple[int, int, Any] | None
    ) -> Iterable[tuple[tuple[int, Any], ...]]:
        """Combinations of ``anchors`` (all at ``t0``) with buffered records of the other
        inputs, and ``fixed`` = ``(input, ts, record)`` on its input."""
        start, end = t0 + self.lower_ms, t0 + self.upper_ms
        parts: list[list[tuple[int, Any]]] = [[(t0, a) for a in anchors]]
        for i in range(1, self.n_inputs):
            if fixed is not None and fixed[0] == i:
                parts.append([(fixed[1], fixed[2])])
                continue
            matches = [(t, r) for t, recs in self.state.buckets(i, start, end) for r in recs]
            if not matches:
                return ()
            parts.append(matches)
        return itertools.product(*parts)

    def _emit_all(self, combos: Iterable[tuple[tuple[int, Any], ...]]) -> None:
        """Each combination to the function (or on as a list); as fresh copies when the
        state says it hands out its own records (``copies_records``), so the buffered
        records stay the state's whatever the function does with its arguments."""
        collect = self.output.collect
        fn = self.fn
        n = 0
        copy = self._copy_records
        for combo in combos:
            ts = max(t for t, _ in combo)
            records = [r for _, r in combo]
            if copy:
                records = _copy(records)
            collect(records if fn is None else fn(*records), ts)
            n += 1
        self.metrics.results_emitted += n

    # ------------------------------------------------------------ watermarks
    def on_watermark(self, watermark: int) -> None:
        """Advance event time to ``watermark``, expire what can no longer join; emits nothing."""
        wm = watermark
        if wm <= self._watermark:
            return
        self._watermark = wm
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= wm:
            time, _, key = heapq.heappop(heap)
            if due.get(key) == time:
                del due[key]
                self._expire_key(key, wm)

    def _arm(self, key: Any, time: int) -> None:
        current = self._due.get(key)
        if current is None or time < current:
            self._due[key] = time
            heapq.heappush(self._heap, (time, next(self._seq), key))
            if len(self._heap) > 64 and len(self._heap) > 4 * len(self._due):
                self._compact()

    def _compact(self) -> None:
        self._heap = [(t, next(self._seq), k) for k, t in self._due.items()]
        heapq.heapify(self._heap)

    def _expire_key(self, key: Any, wm: int) -> None:
        """Apply the expiry rule to every record of ``key`` and re-arm its timer."""
        state = self.state
        state.set_current_key(key)
        lo, hi = self.lower_ms, self.upper_ms
        dropped = 0
        next_due: int | None = None
        anchors: list[int] = []
        for t0, recs in list(state.buckets(0)):
            if t0 + hi <= wm:
                state.remove(0, t0)
                dropped += len(recs)
            else:
                anchors.append(t0)
                if next_due is None or t0 + hi < next_due:
                    next_due = t0 + hi
        anchors.sort()
        multi = self.n_inputs >= 3
        # decide on the buffer as it was before this visit (see `_supported_until`)
        others = (
            [sorted(t for t, _ in state.buckets(i)) if i else [] for i in range(self.n_inputs)]
            if multi and hi < 0
            else []
        )
        drop: list[tuple[int, int, int]] = []
        for i in range(1, self.n_inputs):
            for t, recs in state.buckets(i):
                until = self._future_anchor_until(t)
                if until > wm:  # (a): a future anchor can still complete combinations
                    if next_due is None or until < next_due:
                        next_due = until
                    continue
                if multi:
                    j = bisect_left(anchors, t - hi)
                    if j < len(anchors) and anchors[j] <= t - lo:
                        continue  # (b): held by a buffered anchor; its expiry revisits the key
                    if hi < 0:
                        held = self._supported_until(i, t, wm, others)
                        if held is not None:  # (a3)
                            if next_due is None or held < next_due:
                                next_due = held
                            continue
                drop.append((i, t, len(recs)))
        for i, t, n in drop:
            state.remove(i, t)
            dropped += n
        self.metrics.records_expired += dropped
        self.metrics.state_size -= dropped
        if next_due is not None:
            self._arm(key, next_due)

    def _supported_until(self, j: int, t: int, wm: int, others: list[list[int]]) -> int | None:
        """Rule (a3) (``U < 0``, three or more inputs) for a record of input ``j`` at ``t``.

        A future anchor ``t0 > wm`` with ``t0 + U <= wm`` can complete a combination
        with this record only from members already buffered (any member in
        ``[t0+L, t0+U]`` would be late): one on every input but 0 and ``j``. Returns
        the largest such ``t0`` in ``[max(wm+1, t-U), min(t-L, wm-U)]`` (the record is
        needed until the watermark reaches it), or ``None`` if there is none.
        ``others[i]`` are input ``i``'s buffered timestamps, sorted.
        """
        lo, hi = self.lower_ms, self.upper_ms
        first, last = max(wm + 1, t - hi), min(t - lo, wm - hi)
        if first > last:
            return None
        candidates = [(first, last)]
        for i in range(1, self.n_inputs):
            if i == j:
                continue
            # anchors s - U .. s - L match a member at s
            candidates = _intersect(candidates, _merge([(s - hi, s - lo) for s in others[i]]))
            if not candidates:
                return None
        return candidates[-1][1] if candidates else None

    # ------------------------------------------------------------ checkpoints
    def snapshot_state(self) -> dict[str, Any]:
        """``{"watermark": wm, "state": JoinState.snapshot()}`` (JSON-able).

        The watermark is kept so that records replayed after a restore are
        judged late or not exactly as in the original run.
        """
        return {"watermark": self._watermark, "state": self.state.snapshot()}

    def restore_state(self, saved: Any) -> None:
        """Restore a `snapshot_state` result and rebuild the expiry index from the state.

        ``saved=None`` (nothing stored) keeps the state as it is (e.g. restored with
        the RocksDB database) and only rebuilds the index.
        """
        if saved is not None:
            self.state.restore(saved.get("state", {}))
            self._watermark = int(saved.get("watermark", MIN_WATERMARK))
        self.rebuild_index()

    def rebuild_index(self) -> None:
        """Recompute ``state_size`` and the expiry index from one scan of the state
        (`JoinState.entries`), and apply the expiry rule at the current watermark to
        every key. The state's reads are in memory (`RocksJoinState` reloads its
        mirror from that scan), so visiting each key costs no further scan."""
        self._due = {}
        self._heap = []
        rows = list(self.state.entries())
        self.metrics.state_size = sum(len(records) for *_, records in rows)
        for key in dict.fromkeys(key for key, *_ in rows):
            self._expire_key(key, self._watermark)


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint union of closed integer intervals (input sorted by start)."""
    out: list[tuple[int, int]] = []
    for a, b in intervals:
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _intersect(xs: list[tuple[int, int]], ys: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Intersection of two sorted, disjoint lists of closed integer intervals."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(xs) and j < len(ys):
        a = max(xs[i][0], ys[j][0])
        b = min(xs[i][1], ys[j][1])
        if a <= b:
            out.append((a, b))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return out
