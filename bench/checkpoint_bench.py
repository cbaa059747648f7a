"""Checkpoint benchmark: duration and size vs state size; restore of one task vs the whole job.

Run::

    .venv/bin/python -m bench.checkpoint_bench                  # 10k, 100k, 1M keys; 3 repeats
    .venv/bin/python -m bench.checkpoint_bench --quick          # 10k, 100k keys; 1 repeat
    .venv/bin/python -m bench.checkpoint_bench --sizes 10000,100000 --repeat 5 --skip-e2e

Two parts, each figure the **median** over ``--repeat`` runs (the JSON keeps every run):

1. **Backend level** (no broker, one process). For N keys of value state (~50-byte
   JSON values) spread over 128 key groups, a job of parallelism 4 has four tasks of
   32 key groups each; every task's `KeyedStateBackend` is filled with its ~N/4 keys
   the way the runtime writes them (``set_current_key`` + ``ValueState.update``).
   Measured: fill time; ``snapshot()`` (a RocksDB checkpoint: the memtable is
   flushed, then the SSTs are hard-linked) and the snapshot's size on disk; a
   second ``snapshot()`` after 1% of the keys changed and the bytes of the files
   it has that the first one had not (what an incremental upload would move);
   `CheckpointStorage.complete` for the 4-task checkpoint (sha256 of every file,
   manifest, atomic rename) and ``latest()`` validation (re-hashing everything,
   and size checks only); restore of one task (its own snapshot, same key groups:
   the hard-link fast path; and the same with the files copied, as from another
   filesystem), of the whole job (4 tasks restoring one after the other) and a
   rescale restore (4 snapshots -> 2 tasks, copying the entries of their key
   groups). The same for one backend that holds all N keys (a task of a
   parallelism-1 job). A restore ends with the backend open, not read; files
   were just written, so reads hit the page cache.

2. **End to end** (real Kafka via `LocalKafka`, real processes via `LocalCluster`):
   ``examples.keyed_count:job`` (source x2 -> count x4 -> exactly-once sink x2)
   with ``checkpoint_interval`` 1 s. K events with distinct keys are produced first
   (the state then holds K keys), a light feed keeps records flowing, and once
   every event is counted the checkpoints that follow give the median checkpoint
   duration (trigger to completion) and size. Then ``count#1`` is SIGKILLed
   (``--repeat`` times, two checkpoints apart), under ``individual`` and in a
   second job under ``full``; the failover records give the recovery time
   (``completed_at - kill_requested_at``) and the deployed -> running time (this
   includes opening the task and restoring its state from the checkpoint).

Prints the machine and tables; saves everything to ``out/checkpoint_bench.json``.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from unittest import mock

import orjson

import streamer.state.keyed as keyed_module
from streamer.bench.machine import machine_info
from streamer.graph import key_group_range
from streamer.graph.keygroups import key_group_for_key, subtask_for_key
from streamer.state import CheckpointStorage, CompletedCheckpoint, KeyedStateBackend, StateError

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "checkpoint_bench.json"
MAX_PARALLELISM = 128
PARALLELISM = 4
RESCALE_TO = 2
ONE_TASK = 1  # count#1, the task the end-to-end part kills
STATE_NAME = "last"
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
DEFAULT_E2E_KEYS = (10_000, 100_000)


# ----------------------------------------------------------------------------- helpers


def machine() -> dict[str, Any]:
    from importlib.metadata import version

    return {
        **machine_info(),
        "rocksdict": version("rocksdict"),
        "confluent_kafka": version("confluent-kafka"),
    }


def make_value(i: int) -> dict[str, Any]:
    """A ~50-byte JSON value, distinct per key (so compression sees realistic data)."""
    return {"count": i % 100_000, "ts": 1_700_000_000_000 + i * 37, "tag": f"t{i * 7919 % 99991}"}


def make_key(i: int) -> str:
    return f"user-{i:09d}"


def keys_by_subtask(n: int, parallelism: int) -> list[list[str]]:
    """The keys ``0..n-1`` split by the subtask (of ``parallelism``) that owns their key group."""
    out: list[list[str]] = [[] for _ in range(parallelism)]
    for i in range(n):
        key = make_key(i)
        kg = key_group_for_key(key, MAX_PARALLELISM)
        out[kg * parallelism // MAX_PARALLELISM].append(key)
    return out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def dir_bytes(path: Path) -> int:
    """Bytes of every file under ``path`` (hard-linked files counted in full)."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def inodes(path: Path) -> dict[tuple[int, int], int]:
    """``{(device, inode): size}`` of the files under ``path``."""
    out = {}
    for p in path.rglob("*"):
        if p.is_file():
            st = p.stat()
            out[(st.st_dev, st.st_ino)] = st.st_size
    return out


def fill(backend: KeyedStateBackend, keys: list[str], first: int) -> float:
    """Write one value per key the way the runtime does; returns seconds."""
    state = backend.value_state(STATE_NAME)
    set_key, update = backend.set_current_key, state.update
    values = [make_value(first + j) for j in range(len(keys))]
    t0 = time.perf_counter()
    for key, value in zip(keys, values, strict=True):
        set_key(key)
        update(value)
    return time.perf_counter() - t0


def count_keys(backend: KeyedStateBackend) -> int:
    return sum(1 for _ in backend.keys_of(STATE_NAME))


def copy_only(src: str, dst: str) -> object:
    """`link_or_copy` as it behaves across filesystems: every file copied."""
    return shutil.copy2(src, dst)


def median(values: Iterable[float]) -> float:
    vals = list(values)
    return statistics.median(vals) if vals else float("nan")


# ----------------------------------------------------------------------- backend level


def restore_into(
    target: Path, sources: list[tuple[Path, dict[str, Any]]], key_groups: range
) -> tuple[float, KeyedStateBackend]:
    return timed(
        lambda: KeyedStateBackend.restore(
            target, sources, max_parallelism=MAX_PARALLELISM, key_groups=key_groups
        )
    )


def backend_run(n: int, work: Path, check: bool) -> dict[str, float]:
    """One run at state size ``n``: the parallelism-4 job, then one backend with all keys."""
    r: dict[str, float] = {}
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    split = keys_by_subtask(n, PARALLELISM)

    # ---- the job of parallelism 4: fill, snapshot into one pending checkpoint, complete
    storage = CheckpointStorage(work / "checkpoints")
    pending = storage.begin(1)
    backends: list[KeyedStateBackend] = []
    fills, snaps, sizes = [], [], []
    metas: dict[str, dict[str, Any]] = {}
    first = 0
    for s in range(PARALLELISM):
        groups = key_group_range(s, MAX_PARALLELISM, PARALLELISM)
        backend = KeyedStateBackend.open(
            work / "live" / f"count-{s}", max_parallelism=MAX_PARALLELISM, key_groups=groups
        )
        backends.append(backend)
        fills.append(fill(backend, split[s], first))
        first += len(split[s])
        target = pending.task_dir(f"count#{s}") / "keyed"
        seconds, meta = timed(lambda: backend.snapshot(target))  # noqa: B023 - called at once
        snaps.append(seconds)
        metas[f"count#{s}"] = {"keyed": meta}
        sizes.append(dir_bytes(target))
    r["task_keys"] = len(split[ONE_TASK])
    r["task_fill_s"] = fills[ONE_TASK]
    r["task_fill_keys_per_s"] = len(split[ONE_TASK]) / fills[ONE_TASK]
    r["job_fill_s"] = sum(fills)
    r["task_snapshot_s"] = snaps[ONE_TASK]
    r["job_snapshot_s"] = sum(snaps)
    r["task_snapshot_bytes"] = sizes[ONE_TASK]
    r["job_snapshot_bytes"] = sum(sizes)
    r["complete_sha256_s"], completed = timed(lambda: storage.complete(pending, {"tasks": metas}))
    r["checkpoint_bytes"] = dir_bytes(completed.path)
    r["latest_verify_s"], choice = timed(storage.latest)
    r["latest_sizes_only_s"], _ = timed(lambda: storage.latest(verify_hashes=False))
    assert choice.checkpoint is not None, choice.describe()
    checkpoint: CompletedCheckpoint = choice.checkpoint
    # steady state: 1% of the task's keys changed since its last snapshot
    backend = backends[ONE_TASK]
    task_dir = checkpoint.task_dir(f"count#{ONE_TASK}")
    assert task_dir is not None
    before = inodes(task_dir / "keyed")
    fill(backend, split[ONE_TASK][::100], n)
    again = work / "again" / "keyed"
    r["task_resnapshot_s"], _ = timed(lambda: backend.snapshot(again))
    r["task_resnapshot_new_bytes"] = sum(
        size for ino, size in inodes(again).items() if ino not in before
    )
    for backend in backends:
        backend.close()

    sources: list[tuple[Path, dict[str, Any]]] = []
    for s in range(PARALLELISM):
        task_dir = checkpoint.task_dir(f"count#{s}")
        assert task_dir is not None
        sources.append((task_dir / "keyed", checkpoint.task_metadata(f"count#{s}")["keyed"]))

    def restore_all(label: str, parallelism: int) -> tuple[list[float], list[int]]:
        times, counts = [], []
        for s in range(parallelism):
            groups = key_group_range(s, MAX_PARALLELISM, parallelism)
            seconds, restored = restore_into(work / label / f"count-{s}", sources, groups)
            times.append(seconds)
            if check:
                counts.append(count_keys(restored))
            restored.close()
        shutil.rmtree(work / label)
        return times, counts

    # one task: the hard-link fast path, then with every file copied
    one = key_group_range(ONE_TASK, MAX_PARALLELISM, PARALLELISM)
    r["restore_task_s"], restored = restore_into(work / "r-one", sources, one)
    if check:
        assert count_keys(restored) == len(split[ONE_TASK])
    restored.close()
    with mock.patch.object(keyed_module, "link_or_copy", copy_only):
        r["restore_task_copied_s"], restored = restore_into(work / "r-one-copy", sources, one)
    restored.close()
    # the whole job: 4 tasks restoring one after the other
    times, counts = restore_all("r-job", PARALLELISM)
    r["restore_job_s"] = sum(times)
    r["restore_job_bytes"] = sum(sizes)
    if check:
        assert counts == [len(k) for k in split], (counts, [len(k) for k in split])
    # rescale: 4 snapshots -> 2 tasks (each copies the entries of its 64 key groups)
    times, counts = restore_all("r-rescale", RESCALE_TO)
    r["restore_rescale_s"] = sum(times)
    r["restore_rescale_task_s"] = max(times)
    if check:
        assert sum(counts) == n, (counts, n)
    shutil.rmtree(work / "live")
    shutil.rmtree(work / "checkpoints")

    # ---- one backend with all n keys (parallelism 1)
    storage = CheckpointStorage(work / "checkpoints-single")
    pending = storage.begin(1)
    everything = range(MAX_PARALLELISM)
    backend = KeyedStateBackend.open(
        work / "live-single", max_parallelism=MAX_PARALLELISM, key_groups=everything
    )
    r["single_fill_s"] = fill(backend, [k for keys in split for k in keys], 0)
    target = pending.task_dir("count#0") / "keyed"
    r["single_snapshot_s"], meta = timed(lambda: backend.snapshot(target))
    r["single_snapshot_bytes"] = dir_bytes(target)
    r["single_complete_sha256_s"], completed = timed(
        lambda: storage.complete(pending, {"tasks": {"count#0": {"keyed": meta}}})
    )
    r["single_latest_verify_s"], _ = timed(storage.latest)
    r["single_latest_sizes_only_s"], _ = timed(lambda: storage.latest(verify_hashes=False))
    backend.close()
    single_dir = completed.task_dir("count#0")
    assert single_dir is not None
    single_sources = [(single_dir / "keyed", meta)]
    r["single_restore_s"], restored = restore_into(work / "r-single", single_sources, everything)
    if check:
        assert count_keys(restored) == n
    restored.close()
    with mock.patch.object(keyed_module, "link_or_copy", copy_only):
        r["single_restore_copied_s"], restored = restore_into(
            work / "r-single-copy", single_sources, everything
        )
    restored.close()
    shutil.rmtree(work)
    return r


BACKEND_ROWS: list[tuple[str, str, str]] = [
    # (key, label, unit)
    ("task_keys", "keys in one task (32 of 128 key groups)", "n"),
    ("task_fill_s", "fill one task", "s"),
    ("task_fill_keys_per_s", "fill rate (set_current_key + update)", "rate"),
    ("task_snapshot_s", "snapshot() one task (RocksDB checkpoint, flushes)", "ms"),
    ("job_snapshot_s", "snapshot() all 4 tasks, sum", "ms"),
    ("task_snapshot_bytes", "snapshot size, one task", "MB"),
    ("job_snapshot_bytes", "snapshot size, 4 tasks", "MB"),
    ("task_resnapshot_s", "snapshot() one task again, 1% of keys changed", "ms"),
    ("task_resnapshot_new_bytes", "  files not in the previous snapshot", "KB"),
    ("complete_sha256_s", "CheckpointStorage.complete (sha256 manifest), 4 tasks", "ms"),
    ("latest_verify_s", "latest() validation, re-hashing", "ms"),
    ("latest_sizes_only_s", "latest() validation, sizes only", "ms"),
    ("restore_task_s", "restore ONE task (own snapshot, hard links)", "ms"),
    ("restore_task_copied_s", "restore ONE task, files copied", "ms"),
    ("restore_job_s", "restore WHOLE job (4 tasks in sequence)", "ms"),
    ("restore_job_bytes", "  bytes restored by the whole job", "MB"),
    ("restore_rescale_s", "rescale restore 4 -> 2 tasks, sum", "ms"),
    ("restore_rescale_task_s", "  slowest of the 2 tasks", "ms"),
]

SINGLE_ROWS: list[tuple[str, str, str]] = [
    ("single_fill_s", "fill (all N keys)", "s"),
    ("single_snapshot_s", "snapshot()", "ms"),
    ("single_snapshot_bytes", "snapshot size", "MB"),
    ("single_complete_sha256_s", "CheckpointStorage.complete (sha256 manifest)", "ms"),
    ("single_latest_verify_s", "latest() validation, re-hashing", "ms"),
    ("single_latest_sizes_only_s", "latest() validation, sizes only", "ms"),
    ("single_restore_s", "restore (hard links)", "ms"),
    ("single_restore_copied_s", "restore, files copied", "ms"),
]


def fmt(value: float, unit: str) -> str:
    if value != value:  # nan
        return "-"
    if unit == "ms":
        return f"{value * 1e3:,.1f} ms"
    if unit == "s":
        return f"{value:,.2f} s"
    if unit == "KB":
        return f"{value / 1e3:,.1f} KB"
    if unit == "MB":
        return f"{value / 1e6:,.2f} MB"
    if unit == "rate":
        return f"{value:,.0f}/s"
    return f"{value:,.0f}"


def print_table(
    title: str,
    columns: list[str],
    rows: list[tuple[str, str, str]],
    cells: Callable[[str], list[float]],
) -> None:
    width = max(len(label) for _, label, _ in rows) + 2
    print(f"\n{title}")
    print(" " * width + "".join(f"{c:>16}" for c in columns))
    for key, label, unit in rows:
        print(f"{label:<{width}}" + "".join(f"{fmt(v, unit):>16}" for v in cells(key)))


def run_backend(sizes: list[int], repeat: int, work: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for n in sizes:
        runs = []
        for i in range(repeat):
            t0 = time.perf_counter()
            runs.append(backend_run(n, work / f"backend-{n}", check=i == 0))
            print(f"  backend, {n:,} keys, run {i + 1}/{repeat}: {time.perf_counter() - t0:.1f} s")
        results[str(n)] = {
            "median": {k: median(run[k] for run in runs) for k in runs[0]},
            "runs": runs,
        }
    columns = [f"{n:,} keys" for n in sizes]
    print_table(
        f"Backend level, parallelism-4 job (128 key groups), median of {repeat} run(s):",
        columns,
        BACKEND_ROWS,
        lambda key: [results[str(n)]["median"][key] for n in sizes],
    )
    print_table(
        f"Backend level, one backend with all N keys (parallelism 1), median of {repeat} run(s):",
        columns,
        SINGLE_ROWS,
        lambda key: [results[str(n)]["median"][key] for n in sizes],
    )
    return results


# -------------------------------------------------------------------------- end to end


def produce_distinct_keys(bootstrap: str, topic: str, k: int) -> None:
    """One event for each of ``k0 .. k<k-1>``, as the feeder writes them."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    failed: list[str] = []

    def done(err: Any, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    for i in range(k):
        key = f"k{i}"
        while True:
            try:
                producer.produce(
                    topic,
                    key=key.encode(),
                    value=orjson.dumps({"key": key, "seq": 0}),
                    on_delivery=done,
                )
                break
            except BufferError:
                producer.poll(0.05)
        if i % 1000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    if left or failed:
        raise RuntimeError(f"producing to {topic} failed: {failed[:3] or f'{left} unsent'}")


def checkpoints_after(n: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: int(s["checkpoints"]["completed"]) >= n


def failovers_done(n: int) -> Callable[[dict[str, Any]], bool]:
    from streamer.local.cluster import all_running

    def done(s: dict[str, Any]) -> bool:
        failovers = s["failovers"]
        return (
            len(failovers) >= n and all(f["status"] == "done" for f in failovers) and all_running(s)
        )

    return done


def counted(status: dict[str, Any]) -> int:
    return sum(
        int(t["metrics"].get("records_processed", 0))
        for t in status["tasks"]
        if t["vertex"] == "count"
    )


def e2e_run(
    bootstrap: str,
    topics: Any,
    k: int,
    strategy: str,
    kills: int,
    checkpoints: int,
    feed_rate: float,
    warm: int,
    work: Path,
) -> dict[str, Any]:
    from streamer.local.cluster import LocalCluster, Status, all_running
    from streamer.testing.feeder import EventFeeder

    src, out = topics.create(8), topics.create(4)
    t0 = time.perf_counter()
    produce_distinct_keys(bootstrap, src, k)
    produce_s = time.perf_counter() - t0
    with LocalCluster(2, slots=8, warm=warm, work_dir=work, cwd=REPO) as cluster:
        root = cluster.work_dir / "checkpoints"
        job_id = cluster.submit(
            "examples.keyed_count:job",
            {
                "strategy": strategy,
                "bootstrap_servers": bootstrap,
                "metrics_interval": 0.5,
                "checkpoint_interval": 1.0,
                "checkpoint_dir": str(root),
                "params": {"in": src, "out": out, "delivery": "exactly_once"},
            },
        )
        submitted = time.perf_counter()
        cluster.wait_for(job_id, all_running, timeout=120, what="all running")
        feeder = EventFeeder(bootstrap, src, rate=feed_rate, keys=k).start()
        try:
            status = cluster.wait_for(
                job_id, lambda s: counted(s) >= k, timeout=600, what=f"{k} events counted"
            )
            fill_s = time.perf_counter() - submitted
            # checkpoints triggered after the state held every key
            chk = status["checkpoints"]
            first_full = max([h["id"] for h in chk["history"]] + [chk["in_progress"] or 0]) + 1

            def full_checkpoints(s: Status) -> list[dict[str, Any]]:
                return [
                    h
                    for h in s["checkpoints"]["history"]
                    if h["id"] >= first_full and h["outcome"] == "completed"
                ]

            status = cluster.wait_for(
                job_id,
                lambda s: len(full_checkpoints(s)) >= checkpoints,
                timeout=120,
                what=f"{checkpoints} checkpoints with the full state",
            )
            history = full_checkpoints(status)
            newest = inspect_checkpoint(root, cluster.work_dir / "verify")

            failovers: list[dict[str, Any]] = []
            for i in range(kills):
                done = int(status["checkpoints"]["completed"])
                cluster.wait_for(
                    job_id,
                    checkpoints_after(done + 2),
                    timeout=120,
                    what="two more checkpoints",
                )
                cluster.kill_task(job_id, f"count#{ONE_TASK}")
                status = cluster.wait_for(
                    job_id, failovers_done(i + 1), timeout=180, what=f"recovery {i + 1}"
                )
                rec = status["failovers"][i]
                rec["restored_from"] = (status["checkpoints"].get("restored_from") or {}).get(
                    "checkpoint_id"
                )
                failovers.append(rec)
        finally:
            feeder.stop()
            with contextlib.suppress(Exception):  # the cluster stops every process anyway
                cluster.cancel(job_id)
    return {
        "keys": k,
        "strategy": strategy,
        "produce_s": produce_s,
        "count_all_s": fill_s,
        "checkpoints": history,
        "checkpoint_s": median(h["seconds"] for h in history),
        "checkpoint_bytes": median(h["size"] for h in history),
        "newest_checkpoint": newest,
        "count_task_keyed_bytes_1": newest["keyed_bytes"][f"count#{ONE_TASK}"],
        "count_task_keys_1": newest["keys"],
        "count_task_keys_expected_1": expected_keys(k),
        "count_task_snapshot_s": median(
            v for t, v in newest["snapshot_seconds"].items() if t.startswith("count#") and v
        ),
        "failovers": failovers,
        **failover_summary(failovers),
    }


def expected_keys(k: int) -> int:
    """How many of ``k0 .. k<k-1>`` fall in the key groups of ``count#ONE_TASK``."""
    return sum(1 for i in range(k) if subtask_for_key(f"k{i}", MAX_PARALLELISM, 4) == ONE_TASK)


def inspect_checkpoint(root: Path, scratch: Path) -> dict[str, Any]:
    """The newest completed checkpoint: its id, keyed bytes and snapshot seconds per
    task, and the keys in ``count#ONE_TASK``'s state (restored and counted)."""
    storage = CheckpointStorage(root)
    problem: Exception | None = None
    for attempt in range(5):
        try:
            checkpoint = storage.get(storage.list()[-1], verify_hashes=False)
            keyed_bytes, seconds = {}, {}
            for task in checkpoint.task_ids():
                meta = checkpoint.task_metadata(task)
                task_dir = checkpoint.task_dir(task)
                seconds[task] = meta.get("snapshot_seconds")
                if meta.get("keyed") and task_dir is not None:
                    keyed_bytes[task] = dir_bytes(task_dir / "keyed")
            task = f"count#{ONE_TASK}"
            task_dir = checkpoint.task_dir(task)
            assert task_dir is not None
            sources = [(task_dir / "keyed", checkpoint.task_metadata(task)["keyed"])]
            groups = key_group_range(ONE_TASK, MAX_PARALLELISM, 4)
            target = scratch / f"restore-{attempt}"
            with KeyedStateBackend.restore(
                target, sources, max_parallelism=MAX_PARALLELISM, key_groups=groups
            ) as restored:
                keys = sum(1 for _ in restored.keys_of("count"))
            shutil.rmtree(target)
            return {
                "checkpoint_id": checkpoint.checkpoint_id,
                "keyed_bytes": keyed_bytes,
                "snapshot_seconds": seconds,
                "keys": keys,
            }
        except (StateError, OSError) as exc:  # retained away while we read it: take the next
            problem = exc
    raise RuntimeError(f"could not read the newest checkpoint under {root}: {problem}")


def _span(rec: dict[str, Any], start: str, end: str) -> float:
    a, b = rec.get(start), rec.get(end)
    return float(b - a) if a is not None and b is not None else float("nan")


def failover_summary(failovers: list[dict[str, Any]]) -> dict[str, float]:
    def med(start: str, end: str) -> float:
        return median(_span(f, start, end) for f in failovers)

    return {
        "recovery_s": med("kill_requested_at", "completed_at"),
        "detect_s": med("kill_requested_at", "detected_at"),
        "detected_to_deployed_s": med("detected_at", "deployed_at"),
        "deployed_to_first_running_s": med("deployed_at", "state_restored_at"),
        "deployed_to_running_s": med("deployed_at", "running_at"),
        "running_to_completed_s": med("running_at", "completed_at"),
        "tasks_restarted": median(len(f["tasks_restarted"]) for f in failovers),
    }


E2E_ROWS: list[tuple[str, str, str]] = [
    ("count_all_s", "submit -> the K pre-filled events counted", "s"),
    ("checkpoint_s", "checkpoint duration (trigger -> completed)", "ms"),
    ("count_task_snapshot_s", "count task snapshot (in the task)", "ms"),
    ("checkpoint_bytes", "checkpoint size (all 8 tasks)", "MB"),
    ("count_task_keyed_bytes_1", "count#1 keyed state in the checkpoint", "MB"),
    ("count_task_keys_1", "count#1 keys in it (restored and counted)", "n"),
    ("tasks_restarted", "tasks restarted", "n"),
    ("recovery_s", "recovery (kill requested -> completed)", "ms"),
    ("detect_s", "  kill requested -> detected", "ms"),
    ("detected_to_deployed_s", "  detected -> deployed", "ms"),
    ("deployed_to_first_running_s", "  deployed -> first restarted task running", "ms"),
    ("deployed_to_running_s", "  deployed -> all running (incl. state restore)", "ms"),
    ("running_to_completed_s", "  running -> completed (channels updated)", "ms"),
]


def _e2e_runs(
    bootstrap: str,
    keys: list[int],
    strategies: list[str],
    kills: int,
    checkpoints: int,
    feed_rate: float,
    warm: int,
    work: Path,
) -> list[dict[str, Any]]:
    from streamer.testing import TopicFactory

    results: list[dict[str, Any]] = []
    with TopicFactory(bootstrap, prefix="chkbench") as topics:
        for k in keys:
            for strategy in strategies:
                t0 = time.perf_counter()
                cluster_dir = work / f"cluster-{k}-{strategy}"
                results.append(
                    e2e_run(
                        bootstrap,
                        topics,
                        k,
                        strategy,
                        kills,
                        checkpoints,
                        feed_rate,
                        warm,
                        cluster_dir,
                    )
                )
                shutil.rmtree(cluster_dir, ignore_errors=True)
                gc.collect()  # the feeder's producer sits in a reference cycle: free it now
                print(f"  end to end, {k:,} keys, {strategy}: {time.perf_counter() - t0:.1f} s")
    return results


def run_e2e(
    keys: list[int],
    strategies: list[str],
    kills: int,
    checkpoints: int,
    feed_rate: float,
    warm: int,
    work: Path,
) -> list[dict[str, Any]]:
    from streamer.localkafka import LocalKafka

    with LocalKafka(quiet=True) as kafka:
        # its own function: the topic factory's admin client is gone before the broker stops
        results = _e2e_runs(
            kafka.bootstrap_servers, keys, strategies, kills, checkpoints, feed_rate, warm, work
        )
    for res in results:
        if res["count_task_keys_1"] != res["count_task_keys_expected_1"]:
            print(
                f"WARNING: {res['keys']:,} keys, {res['strategy']}: count#{ONE_TASK}'s "
                f"checkpointed state has {res['count_task_keys_1']} keys, "
                f"expected {res['count_task_keys_expected_1']}"
            )
    columns = [f"{r['keys'] // 1000}k {r['strategy']}" for r in results]
    print_table(
        f"End to end (keyed_count, exactly-once, checkpoint every 1 s, feed {feed_rate:g}/s); "
        f"checkpoint figures: median of the {checkpoints} checkpoints after the state is full; "
        f"failover figures: median of {kills} SIGKILL(s) of count#1:",
        columns,
        E2E_ROWS,
        lambda key: [float(r[key]) for r in results],
    )
    return results


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default=None, help="backend state sizes (keys), comma-separated")
    ap.add_argument("--repeat", type=int, default=None, help="runs per figure (default 3)")
    ap.add_argument("--quick", action="store_true", help="sizes 10k,100k and 1 repeat")
    ap.add_argument("--e2e-keys", default=None, help="end-to-end state sizes (keys)")
    ap.add_argument("--strategies", default="individual,full")
    ap.add_argument("--checkpoints", type=int, default=5, help="end-to-end checkpoints measured")
    ap.add_argument("--feed-rate", type=float, default=200.0, help="events/s during e2e")
    ap.add_argument("--warm", type=int, default=4, help="idle task processes per worker")
    ap.add_argument("--skip-backend", action="store_true")
    ap.add_argument("--skip-e2e", action="store_true")
    ap.add_argument("--work-dir", default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
    else:
        sizes = list(QUICK_SIZES if args.quick else DEFAULT_SIZES)
    e2e_keys = (
        [int(x) for x in args.e2e_keys.split(",")] if args.e2e_keys else list(DEFAULT_E2E_KEYS)
    )
    strategies = args.strategies.split(",")
    checkpoints = 3 if args.quick else args.checkpoints

    info = machine()
    info["loadavg_at_start"] = os.getloadavg()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; python {info['python']}; "
        f"rocksdict {info['rocksdict']}; {info['platform']}; "
        f"load average at start {info['loadavg_at_start'][0]:.2f}"
    )
    value_bytes = statistics.mean(len(orjson.dumps(make_value(i))) for i in range(1000))
    print(
        f"value: ~{value_bytes:.0f} bytes of JSON per key; "
        f"every figure below is a MEDIAN (every run is in {OUT})"
    )
    own_work = args.work_dir is None
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="checkpoint-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": info,
        "command": " ".join(["python -m bench.checkpoint_bench", *(argv or sys.argv[1:])]),
        "repeat": repeat,
        "medians": True,
    }
    started = time.perf_counter()
    try:
        if not args.skip_backend:
            report["backend"] = run_backend(sizes, repeat, work)
        if not args.skip_e2e:
            report["e2e"] = run_e2e(
                e2e_keys, strategies, repeat, checkpoints, args.feed_rate, args.warm, work
            )
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)
    report["seconds"] = time.perf_counter() - started
    info["loadavg_at_end"] = os.getloadavg()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(
        f"\nsaved {OUT} ({report['seconds']:.0f} s; "
        f"load average at end {info['loadavg_at_end'][0]:.2f} on {info['cores']} cores)"
    )


if __name__ == "__main__":
    main()
