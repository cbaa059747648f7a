"""Job settings that reach a join task's chain: `join_mirror_keys` bounds the state's
in-memory mirror (real RocksDB, the shipped order join; no broker)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streamer.api import load_job
from streamer.graph import TaskId
from streamer.runtime.chain import build_task_chain
from streamer.runtime.join_factory import MIRROR_KEYS, RocksJoinState
from streamer.runtime.operators import TaskInfo
from streamer.state import KeyedStateBackend

pytestmark = pytest.mark.timeout(60)


class _Collected:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def collect(self, value: Any, ts: int | None, _input: int = 0) -> None:
        self.values.append(value)


def _join_chain(tmp: Path, config: dict[str, Any]) -> RocksJoinState:
    job = load_job("examples.order_join:job", {})
    vertex = job.execution_graph().vertex_of(TaskId.parse("join#0"))
    ctx = SimpleNamespace(
        job=job,
        vertex=vertex,
        info=TaskInfo("job-1", job.name, vertex.vertex_id, 0, vertex.parallelism, 0),
        config={"bootstrap_servers": "127.0.0.1:1", **config},
    )
    backend = KeyedStateBackend.open(
        tmp / "db", max_parallelism=vertex.max_parallelism, key_groups=range(vertex.max_parallelism)
    )
    chain = build_task_chain(ctx, _Collected(), {}, backend)  # type: ignore[arg-type]
    state = chain.operators[0].state  # type: ignore[attr-defined]
    assert isinstance(state, RocksJoinState)
    backend.close()
    return state


def test_join_mirror_keys_bounds_the_mirror(tmp_path: Path) -> None:
    assert _join_chain(tmp_path / "a", {}).max_keys == MIRROR_KEYS
    assert _join_chain(tmp_path / "b", {"join_mirror_keys": 500}).max_keys == 500
