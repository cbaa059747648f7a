"""``streamer logs JOB [VERTEX SUBTASK] [--follow]``: a task's or the coordinator's log.

Where the logs are comes from the job's status (``streamer.coordinator.diagnostics``):
each task row's ``logs`` names every attempt's file with its worker and host, and
``coordinator_log`` the coordinator's. A file on this host is printed (a local
cluster's are: ``streamer run`` keeps them under its work directory); a file on
another host is named, with the host, for the user to read there.

- ``streamer logs JOB``: the coordinator's log;
- ``streamer logs JOB VERTEX SUBTASK`` (or ``VERTEX#SUBTASK``): every attempt's log
  of that task, oldest first, each under a ``==> ... <==`` header; ``--attempt N``
  one attempt, ``--latest`` the current one;
- ``-n N``: only the last N lines of each file;
- ``--follow``: then print what is appended, switching to each new attempt of the
  task as it starts, until the job ends or Ctrl-C.

Errors (unknown job or task, a log on another host or not known yet) are one line.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import sys
import time
from pathlib import Path
from typing import IO, Any

from streamer.coordinator.commands import client
from streamer.errors import ConfigError, StreamerError

FINAL = ("FINISHED", "FAILED", "CANCELED")
POLL_S = 0.3


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("logs", help="show a task's or the coordinator's log")
    p.add_argument("job_id", metavar="JOB")
    p.add_argument("target", nargs="*", metavar="VERTEX SUBTASK",
                   help="the task (count 2, or count#2); none: the coordinator's log")  # fmt: skip
    which = p.add_mutually_exclusive_group()
    which.add_argument("--attempt", type=int, help="only this attempt of the task")
    which.add_argument("--latest", action="store_true", help="only the task's current attempt")
    p.add_argument("-n", "--lines", type=int, metavar="N", help="only the last N lines of each")
    p.add_argument("-f", "--follow", action="store_true",
                   help="keep printing what is appended (and each new attempt's log)")  # fmt: skip
    p.add_argument("--coordinator", help="HOST:PORT")
    p.set_defaults(func=cmd_logs)


def task_name(target: list[str]) -> str | None:
    """``count#2`` from ``["count", "2"]`` or ``["count#2"]``; None for ``[]``."""
    if not target:
        return None
    if len(target) == 1 and "#" in target[0]:
        vertex, _, subtask = target[0].rpartition("#")
    elif len(target) == 2:
        vertex, subtask = target
    else:
        raise ConfigError(
            "give the task as VERTEX SUBTASK (e.g. count 2), or nothing for the coordinator's log"
        )
    if not subtask.isdigit():
        raise ConfigError(f"bad subtask {subtask!r}: expected a number, e.g. count 2")
    return f"{vertex}#{int(subtask)}"


def job_status(coordinator: Any, job_id: str) -> dict[str, Any]:
    """The job's status; an unknown job is the coordinator's one line, unwrapped."""
    try:
        return dict(coordinator.status(job_id))
    except StreamerError as exc:
        inner = re.search(r"failed job_status: \w+Error: (.+)$", str(exc))
        raise StreamerError(inner[1] if inner else str(exc)) from None


def find_task(status: dict[str, Any], task: str) -> dict[str, Any]:
    """``task``'s row of ``status``; ``ConfigError`` naming the job's tasks otherwise."""
    for row in status["tasks"]:
        if row["task"] == task:
            return dict(row)
    vertices: dict[str, list[int]] = {}
    for row in status["tasks"]:
        vertices.setdefault(row["vertex"], []).append(int(row["subtask"]))
    have = ", ".join(f"{v} 0-{max(s)}" if len(s) > 1 else f"{v} 0" for v, s in vertices.items())
    raise ConfigError(f"job {status['job_id']} has no task {task}; its tasks: {have}")


def select(row: dict[str, Any], attempt: int | None, latest: bool) -> list[dict[str, Any]]:
    """The log entries of the attempts asked for (all by default), oldest first."""
    logs: list[dict[str, Any]] = list(row.get("logs") or [])
    want = row["attempt"] if latest else attempt
    if want is not None:
        logs = [e for e in logs if e["attempt"] == want]
        if not logs:
            if want > row["attempt"] or want < 0:
                raise ConfigError(
                    f"{row['task']} has no attempt {want}: its attempts are 0-{row['attempt']}"
                )
            raise StreamerError(f"{row['task']} attempt {want}: {_unknown(row)}")
    if not logs:
        raise StreamerError(f"{row['task']}: {_unknown(row)}")
    return logs


def _unknown(row: dict[str, Any]) -> str:
    return (
        f"where its log is is not known yet (the attempt has not reported; on worker "
        f"{row.get('worker') or '-'}); try again in a few seconds"
    )


def here(entry: dict[str, Any]) -> bool:
    """Whether a log entry's file can be read on this host."""
    host = entry.get("host")
    return (
        bool(entry.get("path"))
        and (host in (None, socket.gethostname()))
        and (Path(entry["path"]).is_file())
    )


def elsewhere(entry: dict[str, Any], what: str) -> str:
    """One line: where a log is that cannot be read here, and how to read it."""
    path, host = entry.get("path"), entry.get("host")
    if not path:
        return (
            f"{what} is not written to a file (its standard error is a terminal or a pipe): "
            "see where it was started (docker: `docker compose logs coordinator`)"
        )
    if host not in (None, socket.gethostname()):
        worker = f" (worker {entry['worker']})" if entry.get("worker") else ""
        return f"{what} is on host {host}{worker} at {path}: read it there (ssh {host} less {path})"
    return f"{what} was at {path}, which no longer exists (the cluster's files were removed)"


def tail_bytes(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The file's content (its last ``lines`` lines when given) and its size."""
    data = path.read_bytes()
    if lines is not None:
        parts = data.splitlines(keepends=True)
        data = b"".join(parts[-lines:]) if lines > 0 else b""
    return data, path.stat().st_size


def _write(out: IO[bytes], data: bytes) -> None:
    out.write(data)
    out.flush()


def _label(task: str, entry: dict[str, Any]) -> str:
    worker = f", worker {entry['worker']}" if entry.get("worker") else ""
    return f"==> {task} attempt {entry['attempt']}{worker}: {entry['path']} <==\n"


def cmd_logs(args: argparse.Namespace) -> int:
    task = task_name(args.target)
    if task is None and (args.attempt is not None or args.latest):
        raise ConfigError("--attempt and --latest choose a task's log: give VERTEX SUBTASK")
    coordinator = client(args)
    status = job_status(coordinator, args.job_id)
    out = sys.stdout.buffer
    if task is None:
        entry = {**status["coordinator_log"], "attempt": None}
        if not here(entry):
            raise StreamerError(elsewhere(entry, "the coordinator's log"))
        data, size = tail_bytes(Path(entry["path"]), args.lines)
        _write(out, data)
        if args.follow:
            _follow(coordinator, args.job_id, None, Path(entry["path"]), size, out)
        return 0
    row = find_task(status, task)
    entries = select(row, args.attempt, args.latest)
    readable = [e for e in entries if here(e)]
    if not readable:
        raise StreamerError(elsewhere(entries[-1], f"the log of {task} attempt "
                                                   f"{entries[-1]['attempt']}"))  # fmt: skip
    size = 0
    for entry in entries:
        if len(entries) > 1:
            _write(out, _label(task, entry).encode())
        if entry in readable:
            data, size = tail_bytes(Path(entry["path"]), args.lines)
            _write(out, data)
        else:
            print(elsewhere(entry, f"the log of {task} attempt {entry['attempt']}"), flush=True)
    if args.follow:
        last = readable[-1]  # the newest readable one: ``size`` is its size
        switch = task if args.attempt is None else None  # one attempt asked for: only it
        _follow(coordinator, args.job_id, switch, Path(last["path"]), size, out, last["attempt"])
    return 0


def _follow(
    coordinator: Any,
    job_id: str,
    task: str | None,
    path: Path,
    offset: int,
    out: IO[bytes],
    attempt: int | None = None,
) -> None:
    """Print what is appended to ``path``; with ``task``, go on with each newer attempt's
    log. Ends when the job has ended (and the file is drained), the coordinator is
    gone, or on Ctrl-C."""
    next_status = time.monotonic()
    ended = False
    try:
        while True:
            offset = _drain(path, offset, out)
            if ended:
                return
            if time.monotonic() < next_status:
                time.sleep(POLL_S)
                continue
            next_status = time.monotonic() + 1.0
            try:
                status = coordinator.status(job_id)
            except (OSError, StreamerError):
                print("(the coordinator is gone: stopped following)", file=sys.stderr)
                return
            ended = status["state"] in FINAL
            if task is None:
                continue
            newer = [
                e
                for e in find_task(status, task).get("logs") or []
                if attempt is not None and e["attempt"] > attempt and here(e)
            ]
            if newer:
                offset = _drain(path, offset, out)
                entry = newer[0]
                path, offset, attempt = Path(entry["path"]), 0, entry["attempt"]
                _write(out, _label(task, entry).encode())
                ended = False
    except KeyboardInterrupt:
        return


def _drain(path: Path, offset: int, out: IO[bytes]) -> int:
    """Write what ``path`` holds past ``offset``; returns the new offset."""
    with contextlib.suppress(FileNotFoundError), path.open("rb") as f:
        f.seek(offset)
        data = f.read()
        if data:
            _write(out, data)
            return offset + len(data)
    return offset
