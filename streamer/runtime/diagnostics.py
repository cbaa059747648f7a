"""What a task process says about itself besides its counters (in its ``task_metrics``):

- ``log_file`` and ``host``: where its log is (the file its standard error goes to,
  as the worker set it up) and the host it runs on;
- ``recent_errors``: its recent warnings and errors (an exception with its
  traceback, a Kafka client's errors, the netlayer's complaints), deduplicated:
  one entry per logger and text (digits aside) with its ``count`` and first and
  last ``time``; the ``KEEP`` most recent entries are kept, and a report carries
  those new or changed since the previous one (the coordinator keeps them all);
- ``kafka``: each Kafka client's reachability (``streamer.connectors.health``).

``ErrorRecorder.install()`` adds the recorder to the root logger once per process;
call it after ``logging.basicConfig`` (which does nothing once the root logger has
a handler). librdkafka's own log lines (``streamer.kafka.client``) are left out:
``KafkaHealth`` reports those errors, once per text.

Threading: the recorder takes records from any thread (under the handler's lock);
``diagnostics()`` runs on the task's loop.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import traceback
from collections import OrderedDict
from typing import Any

from streamer.connectors.health import all_health

KEEP = 10
TEXT_LIMIT = 500
TRACEBACK_LIMIT = 4000
IGNORED_LOGGERS = ("streamer.kafka.client",)


class ErrorRecorder(logging.Handler):
    """Keeps the ``KEEP`` most recent distinct warnings and errors; see the module docstring."""

    _installed: ErrorRecorder | None = None

    def __init__(self, keep: int = KEEP) -> None:
        super().__init__(logging.WARNING)
        self.keep = keep
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._changed: set[str] = set()

    @classmethod
    def install(cls) -> ErrorRecorder:
        """This process's recorder, on the root logger (added on the first call)."""
        if cls._installed is None:
            cls._installed = cls()
            logging.getLogger().addHandler(cls._installed)
        return cls._installed

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(IGNORED_LOGGERS):
            return
        try:
            text = record.getMessage().strip().splitlines()[0][:TEXT_LIMIT]
        except Exception:  # noqa: BLE001 - a bad log call must not break the task
            text = str(record.msg)[:TEXT_LIMIT]
        key = f"{record.name}|{re.sub(r'[0-9]+', '0', text)}"
        entry = self._entries.pop(key, None)
        if entry is None:
            entry = {"time": record.created, "count": 0, "level": record.levelname,
                     "logger": record.name, "text": text}  # fmt: skip
        entry["count"] += 1
        entry["last_time"] = record.created
        if record.exc_info and record.exc_info[1] is not None:
            entry["traceback"] = "".join(traceback.format_exception(*record.exc_info))[
                -TRACEBACK_LIMIT:
            ]
        self._entries[key] = entry
        self._changed.add(key)
        while len(self._entries) > self.keep:
            self._changed.discard(self._entries.popitem(last=False)[0])

    def snapshot(self) -> list[dict[str, Any]]:
        """The entries, oldest first (copies)."""
        self.acquire()
        try:
            return [dict(e) for e in self._entries.values()]
        finally:
            self.release()

    def take_changes(self) -> list[dict[str, Any]]:
        """The entries new or changed since the previous call, oldest first (copies)."""
        self.acquire()
        try:
            changed = [dict(e) for k, e in self._entries.items() if k in self._changed]
            self._changed.clear()
            return changed
        finally:
            self.release()


def log_location(fd: int = 2) -> str | None:
    """The file ``fd`` (standard error) writes to, or None when it is not a regular
    file (a terminal, a pipe, nothing)."""
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith("/") and stat.S_ISREG(os.stat(path).st_mode):
            return path
    except OSError:
        pass
    return None


def diagnostics(recorder: ErrorRecorder) -> dict[str, Any]:
    """``log_file``, ``host``, ``recent_errors`` and ``kafka`` (see the module docstring)."""
    return {
        "log_file": log_location(),
        "host": socket.gethostname(),
        "recent_errors": recorder.take_changes(),
        "kafka": [h.snapshot() for h in all_health()],
    }
