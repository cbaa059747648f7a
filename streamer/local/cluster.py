"""``LocalCluster``: a coordinator and K workers as real processes on this machine.

Used by ``streamer run`` (local mode), the end-to-end tests, the benchmarks and
users' own tests (``streamer.testing.cluster`` re-exports it)::

    with LocalCluster(workers=2) as cluster:
        job_id = cluster.submit("my_jobs.orders:job", {"bootstrap_servers": bootstrap})
        cluster.wait_for(job_id, lambda s: s["state"] == "RUNNING")
        cluster.kill_task(job_id, "join#3")          # fault injection: SIGKILL

Every process is started here and stopped by the pid recorded here (SIGTERM,
then SIGKILL), never by name; task processes die with their worker.

``cwd`` (default: the current directory) is the project the jobs come from: the
processes run there with ``cwd`` first on their ``PYTHONPATH``, so references such
as ``examples.keyed_count:job`` import from it. They are started with ``python -P``
and put nothing else on ``sys.path`` (see `streamer.api.loader`).

``env`` adds variables to the environment of the coordinator and worker processes
(task processes inherit their worker's), e.g. ``{"STREAMER_FAULT_HOOKS": ...}`` for
a test's fault injection; it overrides this process's variables of the same name.
``status_host`` is where the coordinator's status server listens (default 127.0.0.1;
beyond loopback it requires the status token, see `streamer.coordinator.status_http`).

Threading: not thread-safe; one owner starts, uses and stops a cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streamer.errors import StreamerError
from streamer.rpc.client import CoordinatorClient
from streamer.state.roots import local_cluster_args

Status = dict[str, Any]


class LocalCluster:
    def __init__(
        self,
        workers: int = 2,
        *,
        slots: int = 8,
        warm: int = 2,
        work_dir: str | Path | None = None,
        heartbeat_interval: float = 0.5,
        heartbeat_timeout: float = 4.0,
        log_level: str = "INFO",
        cwd: str | Path | None = None,
        env: dict[str, str] | None = None,
        status_host: str = "127.0.0.1",
    ) -> None:
        self.num_workers = workers
        self.slots = slots
        self.warm = warm
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="streamer-cluster-"))
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.log_level = log_level
        self.cwd = Path(cwd or os.getcwd())
        self.env = dict(env or {})
        self.coordinator: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.address = ""
        self.status_port: int | None = None
        self.status_host = status_host  # beyond loopback: requests carry the status token
        self.client: CoordinatorClient | None = None

    # --------------------------------------------------------------- processes
    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.work_dir / log_name, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(self.cwd), env.get("PYTHONPATH", "")) if p
        )
        try:
            return subprocess.Popen(
                [sys.executable, "-P", *args],  # -P: only PYTHONPATH, not `python -m`'s cwd
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.cwd,
                env=env,
                start_new_session=True,
            )
        finally:
            log.close()

    def start(self) -> LocalCluster:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ready = self.work_dir / "coordinator.json"
        ready.unlink(missing_ok=True)
        self.coordinator = self._spawn(
            [
                "-m", "streamer.coordinator", "--port", "0", "--status-port", "0",
                "--status-host", self.status_host,
                "--ready-file", str(ready),
                "--heartbeat-interval", str(self.heartbeat_interval),
                "--heartbeat-timeout", str(self.heartbeat_timeout),
                # state may live under the usual roots and the cluster's own directory
                *local_cluster_args(self.work_dir, {**os.environ, **self.env}),
            ],
            "coordinator.log",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.coordinator.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise StreamerError(
                    f"the coordinator did not start; see {self.work_dir / 'coordinator.log'}"
                )
            time.sleep(0.05)
        info = orjson.loads(ready.read_bytes())
        self.address = info["address"]
        self.status_port = info["status_port"]
        self.client = CoordinatorClient(self.address)
        for i in range(self.num_workers):
            self.add_worker(f"w{i + 1}")
        self.wait_for_workers(self.num_workers)
        return self

    def add_worker(self, worker_id: str) -> subprocess.Popen[bytes]:
        proc = self._spawn(
            [
                "-m", "streamer.runtime.worker", "--coordinator", self.address,
                "--slots", str(self.slots), "--id", worker_id, "--warm", str(self.warm),
                "--work-dir", str(self.work_dir / "workers"),
            ],
            f"{worker_id}.log",
        )  # fmt: skip
        self.workers[worker_id] = proc
        return proc

    def workers_status(self) -> list[dict[str, Any]]:
        """The coordinator's ``GET /workers``: id, host, pid, slots and used slots of
        each live worker."""
        import urllib.request

        from streamer.coordinator.status_http import bearer_headers

        wildcard = self.status_host in ("0.0.0.0", "::", "")
        host = "127.0.0.1" if wildcard else self.status_host
        url = f"http://{host}:{self.status_port}/workers"
        request = urllib.request.Request(url, headers=bearer_headers(self.status_host))
        with urllib.request.urlopen(request, timeout=5) as resp:
            workers: list[dict[str, Any]] = orjson.loads(resp.read())
        return workers

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if len(self.workers_status()) >= n:
                    return
            time.sleep(0.1)
        self.stop()
        raise StreamerError(f"{n} workers did not register within {timeout:.0f} s")

    def log_tails(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the coordinator's and each worker's log, for a
        failure report."""
        out = []
        for name in ["coordinator", *self.workers]:
            path = self.work_dir / f"{name}.log"
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            tail = "\n".join(text.splitlines()[-lines:])
            out.append(f"----- {path} (last {lines} lines) -----\n{tail}")
        return "\n".join(out)

    def kill_worker(self, worker_id: str) -> int:
        """SIGKILL a worker process (its task processes die with it). Returns its pid."""
        proc = self.workers[worker_id]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        return proc.pid

    def stop(self) -> None:
        """Stop the workers, then the coordinator, each by its own pid."""
        for proc in [*self.workers.values(), self.coordinator]:
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in [*self.workers.values(), self.coordinator]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ jobs
    def _client(self) -> CoordinatorClient:
        if self.client is None:
            raise StreamerError("the local cluster is not started")
        return self.client

    def submit(self, job_ref: str, config: dict[str, Any]) -> str:
        return self._client().submit(job_ref, config)

    def status(self, job_id: str) -> Status:
        return self._client().status(job_id)

    def kill_task(self, job_id: str, task: str) -> None:
        self._client().kill_task(job_id, task)

    def cancel(self, job_id: str) -> None:
        self._client().cancel(job_id)

    def wait_for(
        self,
        job_id: str,
        predicate: Callable[[Status], bool],
        timeout: float = 60.0,
        what: str = "condition",
    ) -> Status:
        """Poll the job's status until ``predicate`` holds; ``TimeoutError`` otherwise."""
        deadline = time.monotonic() + timeout
        status: Status = {}
        while time.monotonic() < deadline:
            status = self.status(job_id)
            if predicate(status):
                return status
            time.sleep(0.1)
        tasks = [(t["task"], t["state"], t["attempt"]) for t in status.get("tasks", [])]
        raise TimeoutError(
            f"job {job_id}: {what} not reached in {timeout:.0f} s; state "
            f"{status.get('state')}, tasks {tasks}, reason {status.get('failure_reason')}"
        )


def all_running(status: Status) -> bool:
    return status["state"] == "RUNNING" and all(t["state"] == "RUNNING" for t in status["tasks"])
