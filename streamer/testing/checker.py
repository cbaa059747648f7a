"""Check a keyed job's output against what was produced: per-key sequences and counts.

Input events are ``{"key", "seq"}`` with ``seq`` counting from 0 per key (see
``EventFeeder``); the job emits one record per event with ``key``, ``seq`` and the
running ``count``. ``check_sequences`` reports, per key and per key group,
sequence numbers missing or duplicated and counts that are not ``seq + 1``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from streamer.graph import key_group_for_key


@dataclass
class KeyReport:
    produced: int
    missing: list[int] = field(default_factory=list)
    duplicated: list[int] = field(default_factory=list)
    wrong_counts: int = 0

    @property
    def exact(self) -> bool:
        return not self.missing and not self.duplicated and not self.wrong_counts


@dataclass
class SequenceReport:
    keys: dict[str, KeyReport]
    max_parallelism: int

    @property
    def exact(self) -> bool:
        return all(r.exact for r in self.keys.values())

    def inexact_keys(self) -> list[str]:
        return sorted(k for k, r in self.keys.items() if not r.exact)

    def lost_per_key_group(self) -> dict[int, int]:
        out: dict[int, int] = defaultdict(int)
        for key, r in self.keys.items():
            if r.missing:
                out[key_group_for_key(key, self.max_parallelism)] += len(r.missing)
        return dict(out)

    def summary(self) -> str:
        bad = self.inexact_keys()
        if not bad:
            return f"all {len(self.keys)} keys exact"
        parts = []
        for k in bad[:5]:
            r = self.keys[k]
            parts.append(f"{k}: missing {len(r.missing)}, duplicated {len(r.duplicated)}, "
                         f"wrong counts {r.wrong_counts}")  # fmt: skip
        return f"{len(bad)} of {len(self.keys)} keys inexact; " + "; ".join(parts)


def check_sequences(
    produced: Mapping[str, int],
    outputs: Iterable[Mapping[str, Any]],
    *,
    max_parallelism: int = 128,
) -> SequenceReport:
    """Compare outputs with ``produced`` (events per key); see the module docstring."""
    seen: dict[str, Counter[int]] = defaultdict(Counter)
    wrong: Counter[str] = Counter()
    for out in outputs:
        key, seq = out["key"], out["seq"]
        seen[key][seq] += 1
        if out.get("count") != seq + 1:
            wrong[key] += 1
    keys = {}
    for key, n in produced.items():
        counts = seen.get(key, Counter())
        keys[key] = KeyReport(
            produced=n,
            missing=[s for s in range(n) if counts[s] == 0],
            duplicated=sorted(s for s, c in counts.items() if c > 1),
            wrong_counts=wrong[key],
        )
    return SequenceReport(keys, max_parallelism)
