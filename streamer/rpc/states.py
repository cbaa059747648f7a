"""``TaskState``: the states of a task attempt (DESIGN.md section 5).

One enum for both sides of the control plane: a task process reports them in
``task_state`` and the coordinator's ``ExecutionStore`` keeps them. A
``StrEnum``, so a state is its name on the wire and in status JSON.
"""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    CREATED = "CREATED"
    DEPLOYING = "DEPLOYING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    CANCELING = "CANCELING"
    CANCELED = "CANCELED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({TaskState.FINISHED, TaskState.CANCELED, TaskState.FAILED})
