"""What each task restores from a completed checkpoint or savepoint: `restore_plan`.

Keyed state from every old subtask whose key groups overlap the new subtask's (this
is how a savepoint restores at another parallelism), source positions merged per
source vertex, and for an exactly-once sink not known to have committed that
checkpoint, its uncommitted records per epoch: the new attempt writes again those
after its commit marker (see ``runtime.outputs``), so a commit whose report never
arrived is not written twice. With the same parallelism, a task also gets its own
``task.json`` entries (operators, round-robin writers, event time).

No state of its own: safe from any thread (blocking: it reads the task's ``task.json``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import orjson

from streamer.graph import ExecutionGraph, TaskId, key_group_range
from streamer.state import CompletedCheckpoint


def restore_plan(
    task: TaskId, source: CompletedCheckpoint, eg: ExecutionGraph, committed: Mapping[TaskId, int]
) -> dict[str, Any]:
    """The restore instructions of ``task`` (of graph ``eg``) from ``source``;
    ``committed``: the last checkpoint each exactly-once sink is known to have committed.

    ``{"checkpoint_id", "from"}`` plus, when there are any, ``"keyed"`` (``[snapshot
    dir, metadata]`` pairs), ``"source"`` (topic and positions), ``"operators"``,
    ``"writers"``, ``"event_time"`` and ``"sink_replay_file"``. A vertex the checkpoint
    does not know starts empty.
    """
    meta = source.metadata
    old_tasks = meta["tasks"]
    vertex = eg.vertex_of(task)
    old_vertex = meta["vertices"].get(vertex.vertex_id)
    plan: dict[str, Any] = {"checkpoint_id": meta["checkpoint_id"], "from": str(source.path)}
    if old_vertex is None:
        return plan  # a vertex the checkpoint does not know: starts empty
    maxp = old_vertex["max_parallelism"]
    old_p = old_vertex["parallelism"]
    mine = key_group_range(task.subtask, maxp, vertex.parallelism)
    keyed, positions, topic = [], {}, None
    for i in range(old_p):
        entry = old_tasks.get(f"{vertex.vertex_id}#{i}")
        if entry is None:
            continue
        if entry.get("source"):
            topic = entry["source"]["topic"]
            positions.update(entry["source"]["positions"])
        theirs = key_group_range(i, maxp, old_p)
        overlaps = max(mine.start, theirs.start) < min(mine.stop, theirs.stop)
        if entry.get("keyed") and overlaps:
            keyed.append([str(source.path / entry["dir"] / "keyed"), entry["keyed"]])
    if keyed:
        plan["keyed"] = keyed
    if topic is not None:
        plan["source"] = {"topic": topic, "positions": positions}
    own = old_tasks.get(str(task))
    if own is not None and old_p == vertex.parallelism:
        task_json = source.path / own["dir"] / "task.json"
        with contextlib.suppress(OSError, orjson.JSONDecodeError):
            meta_json = orjson.loads(task_json.read_bytes())
            # writers: round-robin positions; event_time: the watermark state
            for key in ("operators", "writers", "event_time"):
                if meta_json.get(key):
                    plan[key] = meta_json[key]
        uncommitted = committed.get(task, 0) < int(meta["checkpoint_id"])
        if own.get("sink_records") and uncommitted and source.kind != "savepoint":
            plan["sink_replay_file"] = str(source.path / own["dir"] / "sink.json")
    return plan
