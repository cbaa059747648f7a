"""Scale model of the coordinator: one task failure in jobs of 100 to 4,000 tasks.

Run::

    .venv/bin/python -m bench.scale_model                  # 100,500,1000,2000,4000 tasks; 3 repeats
    .venv/bin/python -m bench.scale_model --sizes 100,500 --repeat 1 --deploy-ms 0 --cancel-ms 0

The default run takes about 4 minutes on 2 cores (it took 13 before the coordinator's
quadratic bookkeeping was fixed; see ``bench/RESULTS-scale.md``).

ByteDance's single-task recovery took a 4,000-slot job from 81 s to 5 s of
failover (seed 003). This machine cannot run 4,000 task processes, so this
benchmark runs the **real** coordinator logic (`Coordinator` + `JobMaster`,
unmodified) in-process on one asyncio loop and simulates everything on the other
side of its RPC connections (``bench/scale_sim.py``):

- ``SimulatedWorker`` stands in for a worker's `RpcConnection`: it answers
  ``deploy_task`` with a pid after ``--deploy-ms`` (the warm-pool figure),
  ``cancel_task`` / ``kill_task`` with ``ok`` after ``--cancel-ms`` (then reports
  ``task_exited`` like the real worker), and ignores ``prepare_job``;
- each deployed ``SimTask`` says ``task_hello`` on its own ``TaskConnection``
  (the coordinator's end of the task's control connection), waits for the
  ``task_plan`` reply, reports ``task_state RUNNING``, swallows
  ``consumer_failed`` / ``producer_failed`` and answers ``update_partition_info``
  with ``ack`` after ``--update-ms``.

Messages from the simulated side enter through ``Coordinator.on_message``, the
same dispatch the RPC server uses, each in its own task (as the transport does).
Both directions go through the real codec: what the coordinator sends is
encoded (`streamer.rpc.encode`, schema checked) and what it receives is encoded
by the simulation and decoded on the coordinator's side (`RpcDecoder`), so
serialization is part of the coordinator's measured work (``--no-codec`` leaves
it out). No sockets, no processes, no Kafka (``bootstrap_servers`` is
``sim:9092``, never contacted), no checkpoints.

The job (``bench.scale_model:job``, params ``parallelism``) is shaped like the
issue's join: three sources x P/8 -hash-> three-way interval join x P
-rebalance-> sink x P/8, so 1.5 P tasks, all-to-all edges, one pipelined region.
Sizes are rounded to the nearest P that is a multiple of 8 (100 -> 96 tasks,
4000 -> 3996). Workers have ``--slots`` slots each, as many as the job needs.

Per (size, strategy, repeat), on a fresh loop: deploy the job and wait until
every task is RUNNING (the **initial deployment**, for reference), then kill
``join#(P/2)`` (its control connection closes) and deliver the worker's
``task_exited`` (``signal 9``), and time until the failover record is ``done``:

- **wall**: with the simulated latencies (one loop: coordinator CPU + waits);
- **coordinator CPU**: ``time.process_time()`` over the failover minus the time
  spent in the simulation's own code (building and encoding its messages; the
  simulated sleeps cost nothing); the event loop's scheduling is charged to
  the coordinator, which pays at least as much for socket I/O in production;
- tasks restarted, messages the coordinator sent (by kind; requests,
  notifications and replies), bytes it encoded, and channel updates
  (``update_partition_info`` requests).

Prints the machine and a table of medians; writes every run to
``out/scale_model.json``. Not part of the test suite (``tests/unit/
test_scale_model.py`` runs a tiny, zero-latency instance of it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import orjson

import streamer
from bench.scale_sim import Latencies, SimCluster, SimJobMaster, SimulatedWorker
from streamer.api import StreamEnvironment, load_job
from streamer.bench.machine import machine_info
from streamer.coordinator.coordinator import Coordinator
from streamer.coordinator.failover import FailoverRecord
from streamer.graph import DEFAULT_MAX_PARALLELISM, ExecutionGraph, TaskId
from streamer.rpc import TaskState
from streamer.state.roots import STATE_ROOTS_ENV

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "out" / "scale_model.json"
JOB_REF = "bench.scale_model:job"
JOB_ID = "job-sim"
DEFAULT_SIZES = (100, 500, 1000, 2000, 4000)
STRATEGIES = ("individual", "region", "full")
TOPICS = ("orders", "payments", "shipments")
FAILED_VERTEX = "join"

log = logging.getLogger("bench.scale_model")

# ------------------------------------------------------------------------- the job


def _key(record: Mapping[str, Any]) -> Any:
    return record["k"]


def _ts(record: Mapping[str, Any]) -> int:
    return int(record["ts"])


@streamer.job
def job(params: Mapping[str, Any]) -> StreamEnvironment:
    """3 sources x P/8 -hash-> join x P -rebalance-> sink x P/8 (param ``parallelism``: P)."""
    p = int(params.get("parallelism", 64))
    s = max(1, p // 8)
    env = StreamEnvironment(
        "scale-model", default_parallelism=s, max_parallelism=max(DEFAULT_MAX_PARALLELISM, p)
    )
    streams = [
        env.from_kafka(
            topic, name=topic, timestamp_assigner=_ts, max_out_of_orderness_ms=1000
        ).key_by(_key)
        for topic in TOPICS
    ]
    (
        streams[0]
        .interval_join(*streams[1:], lower_ms=0, upper_ms=10_000, name="join", parallelism=p)
        .rebalance()
        .to_kafka("out", name="sink", parallelism=s)
    )
    return env


@dataclass(frozen=True)
class Shape:
    parallelism: int  # join
    sources: int  # per topic
    sinks: int

    @property
    def tasks(self) -> int:
        return len(TOPICS) * self.sources + self.parallelism + self.sinks

    @property
    def failed(self) -> TaskId:
        return TaskId(FAILED_VERTEX, self.parallelism // 2)


def shape_for(tasks: int) -> Shape:
    """The job shape (P a multiple of 8) whose task count is nearest to ``tasks``."""
    p = max(8, 8 * round(tasks / 1.5 / 8))
    return Shape(p, p // 8, p // 8)


def load_shape_graph(shape: Shape) -> ExecutionGraph:
    """The execution graph the coordinator builds for ``shape`` (through `load_job`)."""
    return load_job(JOB_REF, {"parallelism": shape.parallelism}).execution_graph()


# ------------------------------------------------------------------------ one run


@dataclass
class _Clock:
    wall: float
    cpu: float
    sim: float

    @classmethod
    def now(cls, cluster: SimCluster) -> _Clock:
        return cls(time.perf_counter(), time.process_time(), cluster.sim_seconds)

    def since(self, start: _Clock) -> dict[str, float]:
        cpu = self.cpu - start.cpu
        sim = self.sim - start.sim
        return {
            "wall_s": self.wall - start.wall,
            "process_cpu_s": cpu,
            "sim_cpu_s": sim,
            "coordinator_cpu_s": max(0.0, cpu - sim),
        }


def _count(sent: list[tuple[str, str]]) -> dict[str, int]:
    return dict(sorted(Counter(kind for kind, _peer in sent).items()))


async def run_once(
    tasks: int,
    strategy: str,
    *,
    latencies: Latencies | None = None,
    slots_per_worker: int = 8,
    codec: bool = True,
    timeout: float = 600.0,
    keep_messages: bool = False,
) -> dict[str, Any]:
    """Deploy a job of about ``tasks`` tasks, fail ``join#(P/2)``, measure; one result dict.

    With ``keep_messages`` the result holds ``failover_messages``: every
    ``(kind, peer)`` the coordinator sent during the failover.
    """
    lat = latencies or Latencies()
    shape = shape_for(tasks)
    coordinator = Coordinator(status_port=None, secret=b"scale-model" * 3)
    cluster = SimCluster(coordinator, lat, codec=codec)
    with (
        tempfile.TemporaryDirectory(prefix="scale-model-") as scratch,
        mock.patch.dict(os.environ, {STATE_ROOTS_ENV: scratch}),  # the job's state root
    ):
        n_workers = math.ceil(shape.tasks / slots_per_worker)
        for i in range(n_workers):
            worker = SimulatedWorker(cluster, f"worker-{i:04d}", slots_per_worker)
            cluster.workers[worker.worker_id] = worker
            await worker.register()
        config: dict[str, Any] = {
            "strategy": strategy,
            "bootstrap_servers": "sim:9092",
            "params": {"parallelism": shape.parallelism},
            "checkpoint_dir": str(Path(scratch) / "checkpoints"),
        }
        jm = SimJobMaster(coordinator, JOB_ID, JOB_REF, config)
        coordinator.jobs[JOB_ID] = jm
        assert len(jm.tasks) == shape.tasks

        # -- initial deployment
        loop = asyncio.get_running_loop()
        all_running = loop.create_future()
        waiting = {"n": shape.tasks}

        def running(_task: str, _attempt: int) -> None:
            waiting["n"] -= 1
            if waiting["n"] == 0 and not all_running.done():
                all_running.set_result(None)

        cluster.on_running = running
        gc.collect()
        start = _Clock.now(cluster)
        sent_before = len(cluster.sent)
        starter = cluster.spawn(jm.start())
        await asyncio.wait_for(all_running, timeout)
        await starter
        deployed = _Clock.now(cluster)
        deploy_plan_wait = cluster.max_plan_wait
        deploy_messages = _count(cluster.sent[sent_before:])
        cluster.on_running = None
        if not all(te.state == TaskState.RUNNING for te in jm.tasks.values()):
            raise AssertionError("not every task is RUNNING after the initial deployment")
        await asyncio.sleep(0.01)  # let stray handler tasks finish

        # -- one failure
        done = loop.create_future()
        marks: dict[str, Any] = {}

        def finished(rec: FailoverRecord) -> None:
            if not done.done():
                marks["clock"] = _Clock.now(cluster)
                marks["sent"] = len(cluster.sent)
                marks["bytes"] = cluster.bytes_sent
                marks["plan_wait"] = cluster.max_plan_wait
                done.set_result(rec)

        jm.failover_done = finished
        gc.collect()
        failed = str(shape.failed)
        bytes_before = cluster.bytes_sent
        sent_before = len(cluster.sent)
        cluster.max_plan_wait = 0.0
        t0 = _Clock.now(cluster)
        victim = cluster.kill(failed)
        await victim.worker.report_exit(victim)
        rec: FailoverRecord = await asyncio.wait_for(done, timeout)
        window = cluster.sent[sent_before : marks["sent"]]
        await asyncio.sleep(0.01)
        not_running = [str(t) for t, te in jm.tasks.items() if te.state != TaskState.RUNNING]
        failover = marks["clock"].since(t0)
        messages = _count(window)
        result: dict[str, Any] = {
            "requested_tasks": tasks,
            "tasks": shape.tasks,
            "shape": {
                "sources": f"{len(TOPICS)} x {shape.sources}",
                "join": shape.parallelism,
                "sinks": shape.sinks,
            },
            "workers": n_workers,
            "slots_per_worker": slots_per_worker,
            "strategy": strategy,
            "failed_task": failed,
            "deploy": {
                **deployed.since(start),
                "messages": sum(deploy_messages.values()),
                "messages_by_kind": deploy_messages,
                "max_plan_wait_s": deploy_plan_wait,
            },
            "failover": {
                **failover,
                "tasks_restarted": len(rec.tasks_restarted),
                "messages": len(window),
                "messages_by_kind": messages,
                "channel_updates": messages.get("update_partition_info", 0),
                "bytes_sent": marks["bytes"] - bytes_before,
                "max_plan_wait_s": marks["plan_wait"],
                "status": rec.status,
                "fell_back": rec.fell_back,
                "record": {k: v for k, v in rec.to_dict().items() if k != "tasks_restarted"},
            },
            "not_running_after": not_running,
            "job_state": jm.state,
            "errors": list(cluster.errors),
        }
        if keep_messages:
            result["failover_messages"] = window
        for fut in list(jm._background) + list(cluster._background):
            fut.cancel()
        await asyncio.gather(*jm._background, *cluster._background, return_exceptions=True)
    return result


def run_one(tasks: int, strategy: str, **kwargs: Any) -> dict[str, Any]:
    """`run_once` on a fresh event loop."""
    return asyncio.run(run_once(tasks, strategy, **kwargs))


# --------------------------------------------------------------------------- report


def _median(runs: list[dict[str, Any]], *path: str) -> float:
    values = []
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return statistics.median(values)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of one (size, strategy)."""
    first = runs[0]
    return {
        "tasks": first["tasks"],
        "strategy": first["strategy"],
        "repeats": len(runs),
        "deploy_wall_s": _median(runs, "deploy", "wall_s"),
        "deploy_cpu_s": _median(runs, "deploy", "coordinator_cpu_s"),
        "failover_wall_s": _median(runs, "failover", "wall_s"),
        "failover_cpu_s": _median(runs, "failover", "coordinator_cpu_s"),
        "failover_sim_cpu_s": _median(runs, "failover", "sim_cpu_s"),
        "tasks_restarted": _median(runs, "failover", "tasks_restarted"),
        "messages": _median(runs, "failover", "messages"),
        "channel_updates": _median(runs, "failover", "channel_updates"),
        "bytes_sent": _median(runs, "failover", "bytes_sent"),
        "deploy_max_plan_wait_s": _median(runs, "deploy", "max_plan_wait_s"),
        "failover_max_plan_wait_s": _median(runs, "failover", "max_plan_wait_s"),
        "messages_by_kind": first["failover"]["messages_by_kind"],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'tasks':>6} {'strategy':<10} {'deploy ms':>10} {'deploy cpu':>10} "
        f"{'failover ms':>11} {'coord cpu ms':>12} {'restarted':>9} {'msgs':>6} "
        f"{'ch.upd':>6} {'KiB sent':>9} {'plan wait ms':>12}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['tasks']:>6} {r['strategy']:<10} {r['deploy_wall_s'] * 1e3:>10.1f} "
            f"{r['deploy_cpu_s'] * 1e3:>10.1f} {r['failover_wall_s'] * 1e3:>11.2f} "
            f"{r['failover_cpu_s'] * 1e3:>12.2f} {r['tasks_restarted']:>9.0f} "
            f"{r['messages']:>6.0f} {r['channel_updates']:>6.0f} {r['bytes_sent'] / 1024:>9.1f} "
            f"{r['failover_max_plan_wait_s'] * 1e3:>12.1f}"
        )


def growth(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Per strategy: the exponent k of ``key ~ tasks^k`` between the two largest sizes."""
    out = {}
    for strategy in STRATEGIES:
        mine = sorted((r for r in rows if r["strategy"] == strategy), key=lambda r: r["tasks"])
        if len(mine) >= 2 and mine[-2][key] > 0 and mine[-1][key] > 0:
            a, b = mine[-2], mine[-1]
            out[strategy] = math.log(b[key] / a[key]) / math.log(b["tasks"] / a["tasks"])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="tasks per job")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--repeat", type=int, default=3, help="runs per (size, strategy); medians")
    ap.add_argument("--deploy-ms", type=float, default=2.0, help="deploy_task -> deployed")
    ap.add_argument("--cancel-ms", type=float, default=5.0, help="cancel_task -> ok")
    ap.add_argument("--update-ms", type=float, default=1.0, help="update_partition_info -> ack")
    ap.add_argument("--startup-ms", type=float, default=0.0, help="deployed -> task_hello")
    ap.add_argument("--running-ms", type=float, default=0.0, help="task_plan -> RUNNING")
    ap.add_argument(
        "--deploy-jitter-ms", type=float, default=0.0, help="uniform extra deploy latency"
    )
    ap.add_argument(
        "--worker-concurrency", type=int, default=0, help="deploys/cancels at once per worker"
    )
    ap.add_argument("--slots", type=int, default=8, help="slots per simulated worker")
    ap.add_argument("--no-codec", action="store_true", help="do not encode/decode messages")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    strategies = args.strategies.split(",")
    lat = Latencies(
        deploy=args.deploy_ms / 1e3,
        cancel=args.cancel_ms / 1e3,
        update=args.update_ms / 1e3,
        startup=args.startup_ms / 1e3,
        running=args.running_ms / 1e3,
        deploy_jitter=args.deploy_jitter_ms / 1e3,
        worker_concurrency=args.worker_concurrency,
    )
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("streamer").setLevel(logging.ERROR)  # one warning per failover otherwise

    info = machine_info()
    info["loadavg_at_start"] = os.getloadavg()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores; python {info['python']}; "
        f"{info['platform']}; load average {info['loadavg_at_start'][0]:.2f}"
    )
    print(
        f"simulated latencies: deploy {args.deploy_ms:g} ms, cancel {args.cancel_ms:g} ms, "
        f"channel update {args.update_ms:g} ms, startup {args.startup_ms:g} ms, "
        f"running {args.running_ms:g} ms, deploy jitter {args.deploy_jitter_ms:g} ms; "
        f"{args.slots} slots/worker; "
        f"codec {'off' if args.no_codec else 'on'}; medians of {args.repeat}"
    )
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    for size in sizes:
        for strategy in strategies:
            mine = []
            for _ in range(args.repeat):
                run = run_one(
                    size, strategy, latencies=lat, slots_per_worker=args.slots,
                    codec=not args.no_codec,
                )  # fmt: skip
                if run["errors"] or run["failover"]["status"] != "done" or run["not_running_after"]:
                    print(f"WARNING: {size} {strategy}: {run['errors'][:3]}", file=sys.stderr)
                mine.append(run)
            runs.extend(mine)
            rows.append(summarize(mine))
            r = rows[-1]
            print(
                f"  {r['tasks']} tasks {strategy}: failover {r['failover_wall_s'] * 1e3:.1f} ms, "
                f"coordinator cpu {r['failover_cpu_s'] * 1e3:.1f} ms",
                flush=True,
            )
    print()
    print(
        "Failover of one join task (medians): wall = detection to record done, with the "
        "simulated latencies;\ncoord cpu = coordinator CPU time in that window; msgs = messages "
        "the coordinator sent; ch.upd = update_partition_info requests;\nplan wait = longest "
        "task_hello -> task_plan wait of a restarted task (tasks give up after hello_timeout, "
        "120 s);\ndeploy = initial deployment to all RUNNING (reference)."
    )
    print_table(rows)
    exponents = growth(rows, "failover_cpu_s")
    if exponents:
        print(
            "\ncoordinator CPU per failover grows as tasks^k between the two largest sizes: "
            + ", ".join(f"{s} k={k:.2f}" for s, k in exponents.items())
        )
    info["loadavg_at_end"] = os.getloadavg()
    report = {
        "machine": info,
        "command": " ".join(["python -m bench.scale_model", *(argv or sys.argv[1:])]),
        "latencies_s": asdict(lat),
        "slots_per_worker": args.slots,
        "codec": not args.no_codec,
        "repeat": args.repeat,
        "medians": rows,
        "cpu_growth_exponent": exponents,
        "runs": runs,
        "seconds": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(
        f"\nsaved {out} ({report['seconds']:.0f} s; load average at end "
        f"{info['loadavg_at_end'][0]:.2f} on {info['cores']} cores)"
    )


if __name__ == "__main__":
    main()
