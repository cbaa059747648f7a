"""The task's control handler (runtime.control), its coordinator link's background sends
(runtime.coordinator_link), its fault hooks (runtime.faults) and metrics (runtime.task_metrics)."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from streamer.rpc import Message, RpcConnectionLost, RpcError
from streamer.runtime.control import ControlHandler
from streamer.runtime.coordinator_link import CoordinatorLink
from streamer.runtime.faults import ENV_VAR, FaultHooks, FaultHooksError
from streamer.runtime.task_metrics import Counters, MetricSources, collect


class Partition:
    """Records what the handler asks of a ResultPartition."""

    def __init__(self) -> None:
        self.failed: list[tuple[Any, ...]] = []
        self.trimmed: list[int] = []

    def mark_consumer_failed(
        self,
        subpartition: int,
        consumer_attempt: int | None = None,
        restore_checkpoint: int | None = None,
    ) -> None:
        self.failed.append((subpartition, restore_checkpoint))

    def trim_barrier_marks(self, checkpoint_id: int) -> None:
        self.trimmed.append(checkpoint_id)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self.calls.append((name, args))


def handler() -> ControlHandler:
    link = CoordinatorLink(SimpleNamespace(identity=dict))  # type: ignore[arg-type]
    cancels: list[bool] = []
    h = ControlHandler("count#0", link, FaultHooks(), lambda: cancels.append(True))
    h.cancels = cancels  # type: ignore[attr-defined]
    return h


def msg(kind: str, **body: Any) -> Message:
    return Message(kind, 1, body)


def run(h: ControlHandler, m: Message) -> None:
    asyncio.run(h.handle(None, m))  # type: ignore[arg-type]


def test_an_unknown_kind_is_a_clear_error() -> None:
    h = handler()
    with pytest.raises(RpcError, match="the task count#0 does not handle 'task_plan'"):
        run(h, msg("task_plan", inputs=[]))
    handled = {
        "consumer_failed",
        "producer_failed",
        "update_partition_info",
        "trigger_checkpoint",
        "checkpoint_complete",
        "checkpoint_abort",
        "cancel_task",
    }
    assert all(h.handle.handles(kind) for kind in handled)
    assert not h.handle.handles("task_hello")


def test_consumer_failed_passes_the_restore_checkpoint() -> None:
    h = handler()
    partition = Partition()
    h.partitions = {"e@1": partition}  # type: ignore[dict-item]
    run(h, msg("consumer_failed", partition_id="e@1", subpartition=3, restore_checkpoint=7))
    run(h, msg("consumer_failed", partition_id="e@1", subpartition=1))
    run(h, msg("consumer_failed", partition_id="nope", subpartition=1))
    assert partition.failed == [(3, 7), (1, None)]


def test_checkpoint_complete_commits_and_trims_barrier_marks() -> None:
    h = handler()
    new = Partition()
    h.partitions = {"e@1": new}  # type: ignore[dict-item]
    commits, source = Recorder(), Recorder()
    h.commits, h.source = commits, source  # type: ignore[assignment]
    run(h, msg("checkpoint_complete", checkpoint_id=4))
    assert new.trimmed == [4]
    assert commits.calls == [("on_checkpoint_complete", (4,))]
    assert source.calls == [("on_checkpoint_complete", (4,))]


def test_checkpoint_abort_reaches_alignment_and_the_snapshotter() -> None:
    h = handler()
    inputs, snapshots = Recorder(), Recorder()
    h.inputs, h.snapshots = inputs, snapshots  # type: ignore[assignment]
    run(h, msg("checkpoint_abort", checkpoint_id=9))
    run(h, msg("trigger_checkpoint", checkpoint_id=10))  # no source: ignored
    assert inputs.calls == [("abort", (9,))]
    assert snapshots.calls == [("abort", (9,))]


def test_cancel_task() -> None:
    h = handler()
    run(h, msg("cancel_task", job_id="j", task="count#0", attempt=0))
    assert h.cancels == [True]  # type: ignore[attr-defined]


# ------------------------------------------------------------------ link


class LostRpc:
    closed = False

    async def notify(self, kind: str, body: dict[str, Any]) -> None:
        raise RpcConnectionLost(f"rpc connection is closed: cannot send {kind}")


def test_failed_background_sends_are_retrieved_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unretrieved: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _l, c: unretrieved.append(c))
        ctx = SimpleNamespace(identity=lambda: {"job_id": "j", "task": "t#0", "attempt": 0})
        link = CoordinatorLink(ctx)  # type: ignore[arg-type]
        link.rpc = LostRpc()  # type: ignore[assignment]
        for i in range(3):
            link.send("checkpoint_ack", {"checkpoint_id": i})
        await asyncio.sleep(0.01)
        assert link.send_failures == 3
        gc.collect()

    with caplog.at_level(logging.DEBUG, logger="streamer.runtime.coordinator_link"):
        asyncio.run(main())
    gc.collect()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "checkpoint_ack" in warnings[0].getMessage()
    assert unretrieved == []


# ---------------------------------------------------------------- faults


def test_fault_hooks_come_only_from_the_environment(tmp_path: Path) -> None:
    assert FaultHooks.from_env({}).empty
    hooks = FaultHooks({"sink#1": 4}, frozenset({"sink#0"}))
    env = hooks.install(tmp_path / "faults.json")
    assert env == {ENV_VAR: str(tmp_path / "faults.json")}
    loaded = FaultHooks.from_env(env)
    assert loaded == hooks
    assert loaded.dies_after_commit("sink#1", 0, 4)
    assert not loaded.dies_after_commit("sink#1", 1, 5)  # only the first attempt
    assert not loaded.dies_after_commit("sink#1", 0, 3)
    assert loaded.swallows_channel_update_ack("sink#0")
    (tmp_path / "bad.json").write_text('{"die_after_comit": {}}')
    with pytest.raises(FaultHooksError, match="unknown fault hooks"):
        FaultHooks.from_env({ENV_VAR: str(tmp_path / "bad.json")})
    with pytest.raises(FaultHooksError, match="cannot read"):
        FaultHooks.from_env({ENV_VAR: str(tmp_path / "missing.json")})


# --------------------------------------------------------------- metrics


def test_metrics_report_records_lost_per_subpartition() -> None:
    def sp(out: int, dropped: int, lost: int) -> Any:
        metrics = SimpleNamespace(
            records_out=out,
            bytes_out=10 * out,
            buffers_out=out // 2,
            records_dropped=dropped,
            records_lost=lost,
            records_replayed=0,
            bytes_replayed=0,
            bytes_replayed_from_disk=0,
            retention_overflows=dropped,
        )
        return SimpleNamespace(metrics=metrics, queue=[b"buffer"] * dropped)

    partition = SimpleNamespace(subpartitions=[sp(5, 1, 2), sp(7, 0, 0)])
    counters = Counters(records_processed=12)
    out = collect(MetricSources(counters, {"e@0": partition}))  # type: ignore[dict-item]
    assert out["records_processed"] == 12
    assert out["partitions"]["e@0"] == {
        "records_out": 12,
        "bytes_out": 120,
        "buffers_out": 5,
        "queued": 1,
        "dropped": [1, 0],
        "lost": [2, 0],
        "replayed": [0, 0],
        "replayed_bytes": [0, 0],
        "replayed_disk_bytes": [0, 0],
        "overflows": [1, 0],
    }
