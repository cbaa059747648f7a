"""What ``streamer run`` prints while it follows a job: pure functions of job status.

``progress_line`` is the one-line summary rewritten in place every second.
``FailoverPrinter`` says which failover records to print: each one exactly once,
when it has ended (its status is no longer ``in_progress``), in whatever order
failovers end. Overlapping failovers (a second kill while the first restart
runs) end out of order, so it tracks the failover ids it has printed rather than
a position in the list.

Threading: not thread-safe; ``streamer run``'s follow loop owns one printer.
"""

from __future__ import annotations

from typing import Any

Status = dict[str, Any]


def progress_line(status: Status, elapsed: float, rate_in: float, rate_out: float) -> str:
    """``[   12.0s] RUNNING   tasks 8/8 running  in 400/s  out 400/s  failovers 1 (last: ...)``."""
    tasks = status["tasks"]
    running = sum(1 for t in tasks if t["state"] == "RUNNING")
    failovers = status["failovers"]
    last = ""
    if failovers:
        f = failovers[-1]
        took = f.get("recovery_seconds")
        last = f" (last: {f['task']} {f['strategy']}" + (
            f", {took * 1000:.0f} ms)" if took is not None else ", in progress)"
        )
    return (
        f"[{elapsed:7.1f}s] {status['state']:<9} tasks {running}/{len(tasks)} running  "
        f"in {rate_in:>8,.0f}/s  out {rate_out:>8,.0f}/s  failovers {len(failovers)}{last}"
    )


def describe_failover(f: dict[str, Any]) -> str:
    """One failover record as text: task, cause, strategy, timings since the kill or
    detection, tasks restarted, a fallback, and the status when it is not ``done``."""
    start = f.get("kill_requested_at") or f["detected_at"]

    def ms(key: str) -> str:
        value = f.get(key)
        return "-" if value is None else f"{(value - start) * 1000:.0f} ms"

    extra = f", fell back: {f['fallback_reason']}" if f.get("fell_back") else ""
    ended = "" if f.get("status", "done") == "done" else f" ({f['status']}"
    if ended:
        by = f.get("superseded_by")
        ended += f" by failover {by})" if by is not None else ")"
    return (
        f"{f['task']} ({f['cause']}) {f['strategy']}: detected {ms('detected_at')}, "
        f"deployed {ms('deployed_at')}, running {ms('running_at')}, "
        f"channels updated {ms('channels_updated_at')}; restarted "
        f"{len(f['tasks_restarted'])} task(s){extra}{ended}"
    )


class FailoverPrinter:
    """Turns successive ``status["failovers"]`` lists into lines to print, each
    failover once, when it has ended; identified by its ``id`` (its position in the
    list when a record has none)."""

    def __init__(self) -> None:
        self._printed: set[Any] = set()

    def new_lines(self, failovers: list[dict[str, Any]]) -> list[str]:
        """``failover <id>: ...`` lines for the failovers that ended since the last call."""
        lines = []
        for index, f in enumerate(failovers):
            key = f.get("id", index)
            if key in self._printed or f["status"] == "in_progress":
                continue
            self._printed.add(key)
            number = f" {f['id']}" if "id" in f else ""
            lines.append(f"failover{number}: {describe_failover(f)}")
        return lines
