"""CPU time of processes from ``/proc``: what a benchmark charges to a job's tasks.

``cpu_seconds(pid)`` is user + system time of every thread of a live process
(``/proc/<pid>/stat`` fields 14 and 15); ``descendants(roots)`` walks the process
tree (``ppid`` of every ``/proc/<pid>/stat``); ``cpu_pressure()`` is the kernel's
CPU pressure stall counter (``/proc/pressure/cpu``: how long some runnable task
waited for a CPU), which shows a machine shared with other work. Linux only:
elsewhere every figure is None and benchmarks print CPU as unknown.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (field 3 on), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name is in parentheses and may hold spaces or ')': split after the last
    return text[text.rfind(")") + 2 :].split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` (all its threads); None if gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def parent_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[1])


def descendants(roots: Iterable[int]) -> set[int]:
    """Every live process below ``roots`` (not the roots themselves)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if entry.name.isdigit():
            ppid = parent_of(int(entry.name))
            if ppid is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def task_pids(status: dict[str, Any], worker_pids: Iterable[int] = ()) -> dict[str, int]:
    """``task name -> pid`` of a job's running tasks (from its status). With
    ``worker_pids``, only tasks that are processes below those workers (this machine's)."""
    below = descendants(worker_pids) if worker_pids else None
    out = {}
    for t in status.get("tasks", []):
        pid = t.get("pid")
        if isinstance(pid, int) and (below is None or pid in below):
            out[str(t["task"])] = pid
    return out


def total_cpu(pids: Iterable[int]) -> float | None:
    """CPU seconds summed over ``pids``; None if any of them is gone."""
    total = 0.0
    for pid in pids:
        cpu = cpu_seconds(pid)
        if cpu is None:
            return None
        total += cpu
    return total


def cpu_pressure() -> float | None:
    """Seconds some runnable task waited for a CPU since boot (PSI ``some total``), or
    None without ``/proc/pressure/cpu``. Over a run: (b - a) / wall seconds is the
    share of the time the machine had CPU contention."""
    try:
        first = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    fields = dict(f.split("=", 1) for f in first.split()[1:])
    return int(fields["total"]) / 1e6 if "total" in fields else None
