"""Fault hooks: faults a test injects into task processes, never part of a job's config.

A test writes a JSON file and starts the workers with ``STREAMER_FAULT_HOOKS``
naming it (``LocalCluster(env=FaultHooks(...).install(path))``); task processes
inherit their worker's environment and load it once at start. With the variable
unset, every hook is off, whatever a submitted job's config says. The file::

    {"die_after_commit": {"sink#1": 4},          # attempt 0 of sink#1 SIGKILLs itself
                                                 # right after committing checkpoint >= 4
     "never_ack_channel_update": ["sink#0"]}     # sink#0 swallows its channel-update acks

Unknown keys or values of the wrong shape fail loudly (`FaultHooksError`): a test
that sets the variable wants its faults.

Threading: immutable values; load once per process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

log = logging.getLogger(__name__)

ENV_VAR: Final = "STREAMER_FAULT_HOOKS"
"""The environment variable naming the fault hooks file (set on the worker by tests)."""


class FaultHooksError(ValueError):
    """The fault hooks file named by ``STREAMER_FAULT_HOOKS`` is unreadable or malformed."""


@dataclass(frozen=True)
class FaultHooks:
    """The faults to inject (empty: none). See the module docstring for the file."""

    die_after_commit: Mapping[str, int] = field(default_factory=dict)
    """Task id -> checkpoint id: attempt 0 is killed right after committing it (or later)."""
    never_ack_channel_update: frozenset[str] = frozenset()
    """Task ids that never acknowledge an ``update_partition_info``."""

    @property
    def empty(self) -> bool:
        return not self.die_after_commit and not self.never_ack_channel_update

    def dies_after_commit(self, task: str, attempt: int, checkpoint_id: int) -> bool:
        """Whether attempt ``attempt`` of ``task`` is to die after committing ``checkpoint_id``."""
        at = self.die_after_commit.get(task)
        return attempt == 0 and at is not None and checkpoint_id >= at

    def swallows_channel_update_ack(self, task: str) -> bool:
        return task in self.never_ack_channel_update

    # ------------------------------------------------------------------ file
    @classmethod
    def from_dict(cls, raw: Any) -> FaultHooks:
        if not isinstance(raw, dict):
            raise FaultHooksError(f"fault hooks must be a JSON object, got {type(raw).__name__}")
        unknown = sorted(set(raw) - {"die_after_commit", "never_ack_channel_update"})
        if unknown:
            raise FaultHooksError(f"unknown fault hooks {unknown}")
        die = raw.get("die_after_commit", {})
        if not isinstance(die, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
            for k, v in die.items()
        ):
            raise FaultHooksError("die_after_commit must map task ids to checkpoint ids")
        never = raw.get("never_ack_channel_update", [])
        if not isinstance(never, list) or not all(isinstance(t, str) for t in never):
            raise FaultHooksError("never_ack_channel_update must be a list of task ids")
        return cls(dict(die), frozenset(never))

    def to_dict(self) -> dict[str, Any]:
        return {
            "die_after_commit": dict(self.die_after_commit),
            "never_ack_channel_update": sorted(self.never_ack_channel_update),
        }

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FaultHooks:
        try:
            raw = orjson.loads(Path(path).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise FaultHooksError(f"cannot read fault hooks from {path}: {exc}") from None
        return cls.from_dict(raw)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> FaultHooks:
        """The hooks named by ``STREAMER_FAULT_HOOKS``; none when it is unset or empty."""
        where = (os.environ if environ is None else environ).get(ENV_VAR, "")
        if not where:
            return cls()
        hooks = cls.load(where)
        if not hooks.empty:
            log.warning("fault hooks installed from %s: %s", where, hooks.to_dict())
        return hooks

    def install(self, path: str | os.PathLike[str]) -> dict[str, str]:
        """Write the file at ``path``; returns the environment to start workers with."""
        Path(path).write_bytes(orjson.dumps(self.to_dict()))
        return {ENV_VAR: str(path)}
