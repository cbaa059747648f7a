"""Failover of the Faust peer (``bench.peers.faust_join``): 2 workers, SIGKILL one, measure.

Against a given Kafka broker: creates run-specific topics (orders, payments,
shipments: 8 partitions each; the output ``order_status_faust-<run>``), starts
**2 Faust workers** as OS processes (``python -m faust -A bench.peers.faust_join
--datadir <dir> worker``, each with its own data dir, RocksDB tables via
rocksdict, and its log in a temporary directory whose path is printed), waits
until both hold active partitions, writes the order generator's events
(``examples.order_join.generate_events``) in event-time order at real-time speed
while recording when each order's last piece was produced, SIGKILLs one worker (by
the pid it started) ``kill_at`` seconds in, lets the rest run, stops every process
it started (by pid, in ``finally``), reads the output topic and returns
measurements shaped like ``streamer bench failover``'s rows:

- ``recovery_s``: kill -> first output again for the killed worker's partitions
  (the partitions whose outputs before the kill came from that worker: every
  output carries ``worker`` and ``partition``). There is no ``detection_s``: a
  Faust worker's death is noticed by the group coordinator (session timeout) and
  shows up only as the survivor's rebalance; ``rebalance`` gives its times after
  the kill (partitions revoked, assigned, table recovery complete).
- ``other_max_gap_s``: the largest gap between outputs of one of the survivor's
  own partitions, from the kill to ``window`` s after the rebalance completed (the
  survivor stalls at the rebalance, i.e. a session timeout after the kill, so a
  window that ends ``window`` s after the kill would miss it; that narrower figure
  is ``other_max_gap_kill_window_s``); ``other_steady_gap_s``: the same in the
  ``window`` s before the kill.
- ``lost`` / ``duplicated`` / ``unexpected`` against ``expected_results`` of the
  events actually produced; ``throughput_per_s`` (results / ``duration``);
  ``latency_s`` p50/p99 (``emitted_at`` - when the order's last piece was produced,
  every result, duplicates included), ``latency_steady_s`` (results emitted before
  the kill only).

Run on its own (starts a local broker)::

    .venv/bin/python -m bench.peers.faust_run --rate 100 --duration 40 --kill-at 15

Needs faust-streaming: ``pip install -e '.[peers]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamer.bench.loadgen import OrderFeeder

PARTITIONS = 8
WORKERS = 2
INSTALL_HINT = "install the peers extra: pip install -e '.[peers]'"
REPO = Path(__file__).resolve().parents[2]


class FaustPeerError(RuntimeError):
    """The Faust peer could not be run or measured."""


class FaustNotInstalled(FaustPeerError, ImportError):
    """faust-streaming is missing (an ImportError too, so importers can skip the peer)."""


def require_faust() -> str:
    """The installed faust-streaming version; a clear error if it is missing."""
    if importlib.util.find_spec("faust") is None:
        raise FaustNotInstalled(
            f"faust-streaming is not installed in {sys.executable}; {INSTALL_HINT}"
        )
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("faust-streaming")
    except PackageNotFoundError:
        raise FaustNotInstalled(
            f"'faust' is importable but is not faust-streaming; {INSTALL_HINT}"
        ) from None


if __name__ != "__main__":
    require_faust()  # importers (``streamer bench failover --faust``) skip the peer on ImportError


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Worker:
    """One Faust worker process: its id, data dir, log and status file."""

    def __init__(self, wid: str, base: Path, env: dict[str, str]) -> None:
        self.id = wid
        self.data_dir = base / wid
        self.data_dir.mkdir(parents=True)
        self.log = base / f"{wid}.log"
        self.status = base / f"{wid}.status.jsonl"
        self.env = {**env, "FAUST_JOIN_WORKER": wid, "FAUST_JOIN_STATUS": str(self.status)}
        self.proc: subprocess.Popen[bytes] | None = None
        self.killed_at: float | None = None

    def start(self) -> None:
        port = _free_port()
        cmd = [
            sys.executable, "-m", "faust", "-A", "bench.peers.faust_join",
            "--datadir", str(self.data_dir),
            "worker", "-l", "info", "--web-port", str(port),
            "--web-bind", "127.0.0.1", "--web-host", "127.0.0.1",
        ]  # fmt: skip
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,  # before the generator thread starts
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self) -> list[dict[str, Any]]:
        try:
            text = self.status.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def kill(self) -> float:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.killed_at = time.time()
        return self.killed_at

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (Faust leaves the group cleanly), then SIGKILL; by pid only."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _settled(workers: list[Worker]) -> bool:
    """Every worker has active partitions from its last assignment, recovered, and
    together they cover every partition exactly once."""
    seen: list[int] = []
    for w in workers:
        events = [e for e in w.events() if e["event"] in ("assigned", "rebalance_complete")]
        last = max((i for i, e in enumerate(events) if e["event"] == "assigned"), default=None)
        if last is None or not events[last]["actives"]:
            return False
        if not any(e["event"] == "rebalance_complete" for e in events[last + 1 :]):
            return False
        seen += events[last]["actives"]
    return sorted(seen) == list(range(PARTITIONS))


def _wait(what: str, cond: Callable[[], bool], timeout: float, workers: list[Worker]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for w in workers:
            if w.proc is not None and w.killed_at is None and not w.alive():
                raise FaustPeerError(
                    f"Faust worker {w.id} (pid {w.pid}) exited with {w.proc.returncode} while "
                    f"waiting for {what}; log {w.log}:\n{_tail(w.log)}"
                )
        if cond():
            return
        time.sleep(0.2)
    logs = "\n".join(f"--- {w.log}\n{_tail(w.log)}" for w in workers)
    raise FaustPeerError(f"timed out after {timeout:g} s waiting for {what}\n{logs}")


def _read_outputs(
    bootstrap: str, topic: str, expected: int, *, idle: float, timeout: float
) -> list[tuple[dict[str, Any], float]]:
    """Every output record (value, Kafka timestamp in s) from the beginning; stops once
    ``expected`` distinct orders were seen and ``idle`` s brought nothing new, or after
    ``3 * idle`` s with nothing new, or at ``timeout``."""
    import orjson
    from confluent_kafka import Consumer, TopicPartition

    consumer: Any = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"faust-peer-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    out: list[tuple[dict[str, Any], float]] = []
    ids: set[str] = set()
    try:
        meta = consumer.list_topics(topic=topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, -2) for p in meta.partitions])
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            msgs = consumer.consume(1000, 0.2)
            for m in msgs:
                if m.error() is not None:
                    continue
                value = orjson.loads(m.value())
                out.append((value, m.timestamp()[1] / 1000.0))
                ids.add(value["order_id"])
            if msgs:
                last_new = time.monotonic()
            quiet = time.monotonic() - last_new
            if (len(ids) >= expected and quiet >= idle) or quiet >= 3 * idle:
                break
    finally:
        consumer.close()
    return out


def _delete_topics(bootstrap: str, names: list[str], prefix: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=10).topics
    doomed = [t for t in existing if t in names or t.startswith(prefix)]
    if doomed:
        for fut in admin.delete_topics(doomed, operation_timeout=30).values():
            with contextlib.suppress(Exception):
                fut.result(30)


def _rebalance_after(events: list[dict[str, Any]], kill: float) -> dict[str, Any]:
    """The survivor's first revocation, assignment and recovery completion after ``kill``."""
    out: dict[str, Any] = {"revoked_s": None, "assigned_s": None, "complete_s": None}
    for e in events:
        if e["t"] < kill:
            continue
        if e["event"] == "revoked" and out["revoked_s"] is None:
            out["revoked_s"] = e["t"] - kill
        elif (
            e["event"] == "assigned" and out["revoked_s"] is not None and out["assigned_s"] is None
        ):
            out["assigned_s"] = e["t"] - kill
            out["actives_after"] = e["actives"]
        elif e["event"] == "rebalance_complete" and out["assigned_s"] is not None:
            out["complete_s"] = e["t"] - kill
            break
    return out


def caught_up_after(
    results: list[dict[str, Any]], last_piece: dict[str, float], kill: float, steady: list[float]
) -> tuple[float | None, float]:
    """Seconds from the kill to the last output whose latency exceeds max(4 x the steady
    p99, 0.25 s), i.e. when every partition is back to steady-state latency; and that bound."""
    from streamer.bench.timeline import percentile

    p99 = percentile(steady, 0.99) or 0.0
    slow = max(4 * p99, 0.25)
    late = [
        r["emitted_at"]
        for r in results
        if r["emitted_at"] >= kill and r["emitted_at"] - last_piece[r["order_id"]] > slow
    ]
    return (max(late) - kill if late else None), slow


def run_faust_failover(
    bootstrap: str,
    *,
    rate: float = 100.0,
    duration: float = 30.0,
    kill_at: float = 12.0,
    seed: int = 7,
    victim: int = 1,
    store: str = "rocksdb://",
    session_timeout: float = 10.0,
    heartbeat_interval: float = 3.0,
    window: float | None = None,
    ready_timeout: float = 120.0,
    drain_idle: float = 5.0,
    drain_timeout: float = 120.0,
    keep_topics: bool = False,
    log_dir: str | Path | None = None,
) -> dict[str, Any]:
    """One Faust failover run: 2 workers, worker ``w<victim>`` SIGKILLed at ``kill_at`` s.

    ``rate`` orders/s, ``rate * duration`` orders (the generator writes for about
    ``duration`` + 10.5 s: payments and shipments trail their orders). Returns a
    dict with the keys of ``streamer bench failover``'s rows (``detection_s`` is None:
    not observable in Faust) plus Faust-specific ones (``rebalance``, ``workers``...).
    """
    faust_version = require_faust()
    from examples.order_join import TOPICS, expected_results, generate_events
    from streamer.bench.timeline import (
        latency_percentiles,
        max_gap,
        oracle_diff,
        rate_series,
        recovery_time,
    )
    from streamer.testing import TopicFactory

    if not 0 < kill_at < duration:
        raise FaustPeerError(f"kill_at ({kill_at:g}) must lie inside (0, duration={duration:g})")
    if victim not in range(WORKERS):
        raise FaustPeerError(f"victim must be 0..{WORKERS - 1}")
    window = min(5.0, duration - kill_at - 1.0) if window is None else window
    run = uuid.uuid4().hex[:8]
    app_id = f"order-join-faust-{run}"
    names = {t: f"{t}-faust-{run}" for t in TOPICS}
    out_topic = f"order_status_faust-{run}"
    base = Path(tempfile.mkdtemp(prefix="faust-peer-", dir=log_dir))
    print(f"faust peer: logs and data in {base}", flush=True)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "PYTHONUNBUFFERED": "1",
        "FAUST_JOIN_BROKER": f"kafka://{bootstrap}",
        "FAUST_JOIN_APP_ID": app_id,
        "FAUST_JOIN_STORE": store,
        "FAUST_JOIN_PARTITIONS": str(PARTITIONS),
        "FAUST_JOIN_ORDERS": names["orders"],
        "FAUST_JOIN_PAYMENTS": names["payments"],
        "FAUST_JOIN_SHIPMENTS": names["shipments"],
        "FAUST_JOIN_OUT": out_topic,
        "FAUST_JOIN_SESSION_TIMEOUT": str(session_timeout),
        "FAUST_JOIN_HEARTBEAT": str(heartbeat_interval),
    }
    events = generate_events(int(rate * duration), seed, rate)
    workers = [Worker(f"w{i}", base, env) for i in range(WORKERS)]
    producer: OrderFeeder | None = None
    created: list[str] = []
    try:
        topics = TopicFactory(bootstrap)
        for name in [*names.values(), out_topic]:
            created.append(topics.create(PARTITIONS, name=name))
        t_start = time.time()
        load_start = os.getloadavg()
        for w in workers:
            w.start()
            print(f"faust peer: started {w.id} pid {w.pid} (log {w.log})", flush=True)
        _wait(
            "both Faust workers to hold partitions",
            lambda: _settled(workers),
            ready_timeout,
            workers,
        )
        ready_s = time.time() - t_start
        assignment = {
            w.id: [e for e in w.events() if e["event"] == "assigned"][-1]["actives"]
            for w in workers
        }
        print(f"faust peer: ready after {ready_s:.1f} s; actives {assignment}", flush=True)

        producer = OrderFeeder(bootstrap, names, events)
        producer.start()
        if not producer.started.wait(30):
            raise FaustPeerError("the generator did not start in 30 s")
        kill_due = producer.started_at + kill_at
        while time.time() < kill_due:
            time.sleep(min(0.05, max(0.0, kill_due - time.time())))
            if producer.error is not None:
                raise FaustPeerError(f"generator failed: {producer.error!r}")
        doomed, survivor = workers[victim], workers[1 - victim]
        kill = doomed.kill()
        since = kill - producer.started_at
        print(f"faust peer: SIGKILL {doomed.id} pid {doomed.pid} at +{since:.2f} s", flush=True)
        producer.join(timeout=duration + 60)
        if producer.is_alive():
            producer.stop_flag.set()
            producer.join(30)
            raise FaustPeerError("the generator did not finish in duration + 60 s")
        if producer.error is not None:
            raise FaustPeerError(f"generator failed: {producer.error!r}")
        if not survivor.alive():
            raise FaustPeerError(
                f"the surviving worker {survivor.id} died; log {survivor.log}:\n"
                + _tail(survivor.log)
            )
        produced_end = time.time()
        oracle = expected_results(producer.produced)
        records = _read_outputs(
            bootstrap, out_topic, len(oracle), idle=drain_idle, timeout=drain_timeout
        )
        survivor_events = survivor.events()
        load_end = os.getloadavg()
        stalls = {
            w.id: [
                [round(e["t"] - kill, 2), e["lag_s"]]
                for e in w.events()
                if e["event"] == "loop_lag"
            ]
            for w in workers
        }
    finally:
        if producer is not None:
            producer.stop_flag.set()
        for w in workers:
            w.stop()
        if not keep_topics:
            with contextlib.suppress(Exception):
                _delete_topics(bootstrap, created, app_id)

    results = [r for r, _ in records]
    # which partitions the killed worker handled: those whose pre-kill outputs came from it
    killed_parts = sorted(
        {r["partition"] for r in results if r["worker"] == doomed.id and r["emitted_at"] < kill}
    )
    survivor_parts = sorted(
        {r["partition"] for r in results if r["worker"] == survivor.id and r["emitted_at"] < kill}
    )
    failed_band = [r["emitted_at"] for r in results if r["partition"] in killed_parts]
    others: dict[int, list[float]] = {}
    for r in results:
        if r["partition"] in survivor_parts:
            others.setdefault(r["partition"], []).append(r["emitted_at"])
    rebalance = _rebalance_after(survivor_events, kill)
    episode_end = kill + (rebalance["complete_s"] or 0.0) + window
    last_output = max((r["emitted_at"] for r in results), default=kill)
    episode_end = min(episode_end, max(last_output, kill + window))

    def band_gap(start: float, end: float) -> float | None:
        return max((max_gap(t, start, end) for t in others.values()), default=None)

    diff = oracle_diff(oracle, [r["order_id"] for r in results])
    last_piece = producer.last_piece_at
    timed = [r for r in results if r["order_id"] in last_piece]
    latencies = [r["emitted_at"] - last_piece[r["order_id"]] for r in timed]
    steady = [r["emitted_at"] - last_piece[r["order_id"]] for r in timed if r["emitted_at"] < kill]
    by_id: dict[str, int] = {}
    for r in results:
        by_id[r["order_id"]] = by_id.get(r["order_id"], 0) + 1
    part_of = {r["order_id"]: r["partition"] for r in results}
    dup_killed = sum(n - 1 for oid, n in by_id.items() if n > 1 and part_of[oid] in killed_parts)
    producer_workers = sorted({r["worker"] for r in results})
    caught_up, slow = caught_up_after(timed, last_piece, kill, steady)
    with open(base / "outputs.jsonl", "w", encoding="utf-8") as f:  # for a closer look
        for r in results:
            lat = (
                r["emitted_at"] - last_piece[r["order_id"]] if r["order_id"] in last_piece else None
            )
            f.write(json.dumps({**r, "since_kill_s": r["emitted_at"] - kill, "latency_s": lat}))
            f.write("\n")
    recovery = recovery_time(failed_band, kill)
    start, end = kill - 5.0, kill + max(window, (rebalance["complete_s"] or 0.0) + window) + 2.0
    other_times = [t for ts in others.values() for t in ts]
    emitted = sorted(r["emitted_at"] for r in results)
    return {
        "strategy": "faust",
        "detection_s": None,
        "recovery_s": recovery,
        "other_max_gap_s": band_gap(kill, episode_end),
        "other_max_gap_kill_window_s": band_gap(kill, kill + window),
        "other_steady_gap_s": band_gap(kill - window, kill),
        "tasks_restarted": None,
        "fell_back": None,
        "expected": diff.expected,
        "delivered": diff.delivered,
        "lost": diff.lost,
        "lost_in_killed_partitions": sum(
            1 for oid in set(oracle) - set(by_id) if producer.partition_of.get(oid) in killed_parts
        ),
        "duplicated": diff.duplicated,
        "duplicated_in_killed_partitions": dup_killed,
        "unexpected": diff.unexpected,
        "throughput_per_s": diff.delivered / duration,
        "output_span_s": (emitted[-1] - emitted[0]) if emitted else None,
        "latency_s": latency_percentiles(latencies),
        "latency_max_s": max(latencies, default=None),
        "latency_steady_s": latency_percentiles(steady),
        "rebalance": rebalance,
        # kill -> the last output slower than `caught_up_threshold_s` (the backlog is gone)
        "caught_up_s": caught_up,
        "caught_up_threshold_s": slow,
        "kill_at_s": kill - producer.started_at,
        "produced_for_s": produced_end - producer.started_at,
        "ready_s": ready_s,
        "workers": {
            "killed": {
                "id": doomed.id,
                "pid": doomed.pid,
                "partitions": killed_parts,
                "assigned": assignment[doomed.id],
            },
            "survivor": {
                "id": survivor.id,
                "pid": survivor.pid,
                "partitions": survivor_parts,
                "assigned": assignment[survivor.id],
            },
            "seen_in_outputs": producer_workers,
        },
        "settings": {
            "faust_streaming": faust_version,
            "store": store,
            "partitions": PARTITIONS,
            "workers": WORKERS,
            "table_standby_replicas": 1,
            "broker_session_timeout_s": session_timeout,
            "broker_heartbeat_interval_s": heartbeat_interval,
            "processing_guarantee": "at_least_once",
            "rate": rate,
            "duration": duration,
            "kill_at": kill_at,
            "seed": seed,
            "window_s": window,
        },
        # the survivor's 5 s reports: [s since the kill, events so far, CPU s used in those 5 s]
        "survivor_load": [
            [round(e["t"] - kill, 1), e["events"], e.get("cpu_s")]
            for e in survivor_events
            if e["event"] == "stats"
        ],
        # event-loop stalls > 0.25 s per worker: [seconds since the kill, lag s]
        "loop_stalls": stalls,
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in load_end],
        },
        "log_dir": str(base),
        "series": {
            "start": start,
            "bin_s": 0.25,
            "kill": kill,
            "failed": rate_series(failed_band, start, end),
            "others_per_task": [
                v / max(1, len(survivor_parts)) for v in rate_series(other_times, start, end)
            ],
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers.faust_run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--bootstrap-servers", help="use this broker (default: start a LocalKafka)")
    parser.add_argument("--rate", type=float, default=100.0, help="orders per second")
    parser.add_argument("--duration", type=float, default=40.0, help="seconds of orders")
    parser.add_argument("--kill-at", type=float, default=15.0, help="seconds into the generator")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--victim", type=int, default=1, help="worker to kill (0 or 1)")
    parser.add_argument("--store", default="rocksdb://", help="rocksdb:// or memory://")
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--heartbeat-interval", type=float, default=3.0)
    parser.add_argument("--series", action="store_true", help="keep the rate series in the JSON")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)
    try:
        require_faust()
    except FaustPeerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    kwargs: dict[str, Any] = {
        "rate": args.rate,
        "duration": args.duration,
        "kill_at": args.kill_at,
        "seed": args.seed,
        "victim": args.victim,
        "store": args.store,
        "session_timeout": args.session_timeout,
        "heartbeat_interval": args.heartbeat_interval,
    }
    if args.bootstrap_servers:
        result = run_faust_failover(args.bootstrap_servers, **kwargs)
    else:
        from streamer.localkafka import LocalKafka

        with LocalKafka(quiet=True) as kafka:
            print(f"faust peer: local Kafka at {kafka.bootstrap_servers}", flush=True)
            result = run_faust_failover(kafka.bootstrap_servers, **kwargs)
    if not args.series:
        result.pop("series", None)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
