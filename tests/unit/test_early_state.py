"""`EarlyState`: a task opens its keyed state from the deployment's restore hint while
its hello is answered, and keeps it only if the plan restores that same state."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from streamer.graph import OperatorKind
from streamer.runtime.chain import EarlyState
from streamer.state import KeyedStateBackend


def _ctx(tmp: Path, hint: dict[str, Any] | None, kind: OperatorKind = OperatorKind.JOIN) -> Any:
    """The parts of a `TaskContext` that opening keyed state reads."""
    vertex = SimpleNamespace(
        operators=[SimpleNamespace(kind=kind)], max_parallelism=8, parallelism=1
    )
    return SimpleNamespace(
        config={"state_dir": str(tmp / "state")},
        deployment={} if hint is None else {"restore_hint": hint},
        job_id="job-1",
        task="join#0",
        attempt=1,
        task_id=SimpleNamespace(subtask=0),
        vertex=vertex,
    )


def _checkpoint(tmp: Path) -> dict[str, Any]:
    """A real RocksDB snapshot holding ``k -> 42``, as a restore plan names it."""
    chk = tmp / "chk-5"
    with KeyedStateBackend.open(tmp / "live", max_parallelism=8, key_groups=range(8)) as b:
        state = b.value_state("v")
        b.set_current_key("k")
        state.update(42)
        meta = b.snapshot(chk / "keyed")
    return {"checkpoint_id": 5, "from": str(chk), "keyed": [[str(chk / "keyed"), meta]]}


def test_the_state_opened_early_is_kept_when_the_plan_restores_the_same(tmp_path: Path) -> None:
    plan = _checkpoint(tmp_path)
    early = EarlyState(_ctx(tmp_path, plan))
    early.open()
    backend = early.take({**plan, "determinants": [], "replay_from": 5})
    assert backend is not None
    backend.set_current_key("k")
    assert backend.value_state("v").value() == 42
    backend.close()


def test_a_plan_for_other_state_closes_the_early_one(tmp_path: Path) -> None:
    plan = _checkpoint(tmp_path)
    early = EarlyState(_ctx(tmp_path, plan))
    early.open()
    assert early.backend is not None
    opened = early.backend
    assert early.take({"checkpoint_id": 6, "from": plan["from"], "keyed": plan["keyed"]}) is None
    assert early.backend is None
    opened.close()  # closing again is harmless: it was closed by `take`


def test_no_hint_opens_fresh_state_that_a_plan_without_state_keeps(tmp_path: Path) -> None:
    early = EarlyState(_ctx(tmp_path, None))
    early.open()
    backend = early.take({})
    assert backend is not None
    backend.set_current_key("k")
    assert backend.value_state("v").value() is None
    backend.close()
    # ... and one with state does not: its checkpoint is restored instead
    early = EarlyState(_ctx(tmp_path, None))
    early.open()
    assert early.take(_checkpoint(tmp_path / "later")) is None


def test_a_chain_without_keyed_state_opens_nothing(tmp_path: Path) -> None:
    early = EarlyState(_ctx(tmp_path, _checkpoint(tmp_path), kind=OperatorKind.MAP))
    early.open()
    assert early.backend is None
    assert early.take({}) is None


def test_a_failed_early_restore_is_left_to_the_plan(tmp_path: Path) -> None:
    plan = _checkpoint(tmp_path)
    broken = {**plan, "keyed": [[str(tmp_path / "missing"), plan["keyed"][0][1]]]}
    early = EarlyState(_ctx(tmp_path, broken))
    early.open()  # logs, does not raise: the restore from the plan reports it
    assert early.backend is None
    assert early.take(broken) is None
