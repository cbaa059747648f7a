"""`streamer logs`: how a task is named, and what is said of a log it cannot read here."""

from __future__ import annotations

import socket

import pytest

from streamer.errors import ConfigError
from streamer.local.logs import elsewhere, here, task_name


def test_a_task_is_vertex_and_subtask_or_vertex_hash_subtask() -> None:
    assert task_name([]) is None
    assert task_name(["count", "2"]) == task_name(["count#2"]) == "count#2"
    with pytest.raises(ConfigError, match=r"^give the task as VERTEX SUBTASK"):
        task_name(["count"])
    with pytest.raises(ConfigError, match=r"^bad subtask 'x': expected a number"):
        task_name(["count", "x"])


def test_a_log_on_another_host_is_named_with_where_to_read_it(tmp_path: object) -> None:
    entry = {"attempt": 1, "worker": "w2", "host": "node-7", "path": "/w/job/count-2.attempt1.log"}
    assert not here(entry)
    assert elsewhere(entry, "the log of count#2 attempt 1") == (
        "the log of count#2 attempt 1 is on host node-7 (worker w2) at "
        "/w/job/count-2.attempt1.log: read it there (ssh node-7 less /w/job/count-2.attempt1.log)"
    )
    gone = {**entry, "host": socket.gethostname()}
    assert elsewhere(gone, "the log") == (
        "the log was at /w/job/count-2.attempt1.log, which no longer exists (the cluster's "
        "files were removed)"
    )
    assert elsewhere({"host": "c1", "path": None}, "the coordinator's log") == (
        "the coordinator's log is not written to a file (its standard error is a terminal or "
        "a pipe): see where it was started (docker: `docker compose logs coordinator`)"
    )
