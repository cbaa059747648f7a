"""What a failover record says about records and retention, as text for ``streamer run``.

A pure function of one record of the status JSON (``status["failovers"][i]``);
``describe_failover`` appends it. Counts arrive a few metrics intervals after a
failover ends (``counting`` is true until then); ``None`` means not counted (a
region or full restart replays from the checkpoint and loses nothing).
"""

from __future__ import annotations

from typing import Any


def size(n: int) -> str:
    """``812 B``, ``3.4 KiB``, ``12.0 MiB``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def describe_counts(f: dict[str, Any]) -> str:
    """``; replayed 1,204 records (96.1 KiB from memory, 0 B from disk), 310
    deduplicated`` for a lossless failover; ``; lost 212 records`` for a lossy one;
    ``; went lossy: <why>`` and ``, retention overflowed N times`` when they apply."""
    out = ""
    if f.get("lossy_reason"):
        out += f"; went lossy: {f['lossy_reason']}"
    replayed = f.get("records_replayed")
    if replayed is not None and f.get("replay_from") is not None:
        memory = size(f.get("bytes_replayed_from_memory") or 0)
        disk = size(f.get("bytes_replayed_from_disk") or 0)
        out += f"; replayed {replayed:,} records ({memory} from memory, {disk} from disk)"
        out += f", {f.get('records_deduplicated') or 0:,} deduplicated"
    elif f.get("records_dropped") is not None:
        out += f"; lost {f['records_dropped']:,} records"
    if f.get("retention_overflows"):
        out += f", retention overflowed {f['retention_overflows']:,} times"
    return out
