"""What ``streamer run`` prints while it follows a job: pure functions of job status.

``progress_line`` is the one-line summary printed every second (rewritten in place
on a terminal, one line per update otherwise): state, tasks running, whether the
sources and sinks reach Kafka (and for how long they have not), records in and
out per second, the sources' consumer lag, the most back-pressured task and the
failovers. ``ErrorPrinter`` says which of the tasks' recent errors to print.
``FailoverPrinter`` says which failover records to print: each one exactly once,
when it has ended (its status is no longer ``in_progress``), in whatever order
failovers end. Overlapping failovers (a second kill while the first restart
runs) end out of order, so it tracks the failover ids it has printed rather than
a position in the list.

Threading: not thread-safe; ``streamer run``'s follow loop owns one printer.
"""

from __future__ import annotations

import re
from typing import Any

from streamer.local.failover_counts import describe_counts

Status = dict[str, Any]
ERRORS_PER_UPDATE = 5


def kafka_part(status: Status) -> str:
    """``Kafka unreachable for 14 s (sources 2/2, sinks 1/2)  `` or nothing while
    every running task reaches Kafka."""
    kafka = status.get("kafka") or {"reachable": True}
    if kafka["reachable"]:
        return ""
    down = set(kafka.get("tasks", ()))
    counts = []
    for role in ("source", "sink"):
        tasks = {
            t["task"]
            for t in status["tasks"]
            if any(c["role"].startswith(role) for c in t.get("metrics", {}).get("kafka", ()))
        }
        if tasks:
            counts.append(f"{role}s {len(tasks & down)}/{len(tasks)}")
    which = f" ({', '.join(counts)})" if counts else ""
    return f"Kafka unreachable for {kafka['unreachable_s']:.0f} s{which}  "


def lag_and_backpressure(status: Status) -> str:
    """``lag 1,204  back-pressure 35% count#2  ``: the sources' total consumer lag (-
    before any source reported it) and the most back-pressured task's share of time
    blocked on its outputs in the last interval."""
    lags = [
        sum(t["metrics"]["source"]["lag"].values())
        for t in status["tasks"]
        if "lag" in t.get("metrics", {}).get("source", {})
    ]
    lag = f"{sum(lags):>8,}" if lags else f"{'-':>8}"
    ratios = [
        (t["metrics"]["backpressure"]["ratio"], t["task"])
        for t in status["tasks"]
        if "backpressure" in t.get("metrics", {})
    ]
    worst = max(ratios, default=(0.0, ""))
    who = f" {worst[1]}" if worst[0] >= 0.01 else ""
    return f"lag {lag}  back-pressure {worst[0] * 100:3.0f}%{who}  "


def progress_line(status: Status, elapsed: float, rate_in: float, rate_out: float) -> str:
    """``[   12.0s] RUNNING   tasks 8/8 running  [Kafka unreachable for 14 s (sources
    2/2, sinks 2/2)  ]in 400/s  out 400/s  lag 1,204  back-pressure  35% count#2
    failovers 1 (last: ...)``."""
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
        f"{kafka_part(status)}in {rate_in:>8,.0f}/s  out {rate_out:>8,.0f}/s  "
        f"{lag_and_backpressure(status)}failovers {len(failovers)}{last}"
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
        f"{len(f['tasks_restarted'])} task(s){extra}{ended}{describe_counts(f)}"
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
            if key in self._printed or f["status"] == "in_progress" or f.get("counting"):
                continue
            self._printed.add(key)
            number = f" {f['id']}" if "id" in f else ""
            lines.append(f"failover{number}: {describe_failover(f)}")
        return lines


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<fn>\S+)')


def _error_text(entry: dict[str, Any]) -> str:
    """An entry's text, with the last line of its traceback (the exception) and where
    it was raised, if it has a traceback."""
    text = str(entry["text"])
    tb = [line for line in str(entry.get("traceback") or "").splitlines() if line.strip()]
    if tb and tb[-1].strip() not in text:
        text += f": {tb[-1].strip()}"
    frames = [m for m in map(_FRAME.match, tb) if m is not None]
    if frames:
        where = frames[-1]
        text += f" (at {where['file']}:{where['line']} in {where['fn']})"
    return text


class ErrorPrinter:
    """Turns the tasks' ``recent_errors`` into lines to print: each error once (per
    task attempt, logger and text), the same text of several tasks on one line, at
    most ``ERRORS_PER_UPDATE`` lines per update (then how many more and where to see
    them). Of the coordinator's entries (failures) only exceptions are printed, with
    where they were raised; the failover lines tell the other causes."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self._printed: set[tuple[str, int, str, str]] = set()

    def new_lines(self, status: Status) -> list[str]:
        fresh: dict[tuple[str, str], list[str]] = {}
        for t in status["tasks"]:
            for e in t.get("recent_errors", ()):
                key = (t["task"], int(e.get("attempt", 0)), str(e.get("logger")), e["text"])
                failure = e.get("logger") == "coordinator"
                if (failure and not e.get("traceback")) or key in self._printed:
                    continue
                self._printed.add(key)
                level = str(e.get("level", "ERROR")).lower()
                fresh.setdefault((level, _error_text(e)), []).append(f"{key[0]}@{key[1]}")
        lines = [f"{level} in {', '.join(tasks)}: {text}" for (level, text), tasks in fresh.items()]
        if len(lines) > ERRORS_PER_UPDATE:
            more = len(lines) - ERRORS_PER_UPDATE
            hint = f"streamer status {self.job_id}, streamer logs {self.job_id} VERTEX SUBTASK"
            lines = [*lines[:ERRORS_PER_UPDATE], f"... and {more} more ({hint})"]
        return lines


def fit(line: str, width: int) -> str:
    """``line`` cut to ``width`` columns (a terminal's progress line must not wrap)."""
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"
