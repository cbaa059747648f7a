"""Pipelined regions (FLIP-1): what a region restart must restart together.

A pipelined region is a connected component of the undirected graph whose
nodes are tasks and whose links are the task-to-task channels of
``pipelined`` edges. A ``kafka`` exchange persists its data, so it links
nothing: it cuts regions. Every task is in exactly one region (a task with no
pipelined channel is a region of its own).

Pure functions of an `ExecutionGraph`; the result is deterministic: regions
are ordered by their first task in ``eg.tasks`` (topological, then subtask).
"""

from __future__ import annotations

from collections.abc import Mapping

from streamer.graph.execution import ExecutionGraph, TaskId
from streamer.graph.jobgraph import ExchangeType, GraphError

__all__ = ["pipelined_regions", "region_of", "regions_by_task"]


def pipelined_regions(eg: ExecutionGraph) -> list[frozenset[TaskId]]:
    """The pipelined regions of ``eg``: a partition of ``eg.tasks``."""
    parent: dict[TaskId, TaskId] = {t: t for t in eg.tasks}

    def find(t: TaskId) -> TaskId:
        root = t
        while parent[root] != root:
            root = parent[root]
        while parent[t] != root:  # path compression
            parent[t], t = root, parent[t]
        return root

    for consumer in eg.tasks:
        for gate in eg.input_gates(consumer):
            if gate.exchange != ExchangeType.PIPELINED:
                continue
            for producer in gate.channels:
                a, b = find(producer), find(consumer)
                if a != b:
                    parent[max(a, b)] = min(a, b)

    members: dict[TaskId, list[TaskId]] = {}
    for t in eg.tasks:  # dicts keep insertion order: regions come out by first task
        members.setdefault(find(t), []).append(t)
    return [frozenset(ts) for ts in members.values()]


def regions_by_task(eg: ExecutionGraph) -> Mapping[TaskId, frozenset[TaskId]]:
    """Every task mapped to its pipelined region (computed once for all tasks)."""
    return {t: region for region in pipelined_regions(eg) for t in region}


def region_of(eg: ExecutionGraph, task: TaskId) -> frozenset[TaskId]:
    """The pipelined region containing ``task``; `GraphError` for an unknown task."""
    for region in pipelined_regions(eg):
        if task in region:
            return region
    raise GraphError(f"unknown task {task} in job '{eg.job_graph.job_name}'")
