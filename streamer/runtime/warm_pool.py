"""``WarmPool``: pre-started idle task processes, so a (re)deploy skips Python's start-up.

Each idle process runs ``python -P -m streamer.runtime.task_process`` (``-P``: the
worker's working directory is not on its ``sys.path``; job modules come from
``PYTHONPATH`` or an installed package): it imports
the runtime and its heavy dependencies (confluent-kafka, orjson, rocksdict,
netlayer), writes ``ready`` on stdout, then waits for JSON lines on stdin:

- ``{"op": "preload", "module": "pkg.job"}``: import the job module now (unless
  `load_job` would refuse it, e.g. a standard-library module);
- ``{"op": "deploy", ...}``: become that task and run it.

``take()`` hands out an idle process (starting one if none is ready) and
refills the pool in the background. The worker that owns the pool is each
process's parent, so it sees the exit of a task process at once; the child
dies with its worker (``PR_SET_PDEATHSIG``), as it would with its host.

Threading: one asyncio loop (the worker's). Not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from pathlib import Path

import orjson

log = logging.getLogger(__name__)

READY = b"ready\n"


class WarmPool:
    """Keeps ``size`` idle task processes ready; see the module docstring."""

    def __init__(self, size: int = 2, *, env: dict[str, str] | None = None) -> None:
        self.size = size
        self.env = env
        self._idle: list[asyncio.subprocess.Process] = []
        self._starting: set[asyncio.Task[None]] = set()
        self._preloaded: list[str] = []
        self._closed = False

    async def start(self) -> None:
        """Start the pool and wait until its first idle processes are ready."""
        await asyncio.gather(*(self._spawn() for _ in range(self.size)))

    async def _spawn(self) -> None:
        # -P: the worker's working directory is not put on the task's sys.path
        args = [sys.executable, "-P", "-m", "streamer.runtime.task_process"]
        for module in self._preloaded:
            args += ["--preload", module]
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=None,
            env=self.env,
            start_new_session=True,
        )
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        except TimeoutError:
            line = b""
        if line != READY:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            log.error("a warm task process failed to start (exit code %s)", proc.returncode)
            return
        if self._closed:
            proc.kill()
            await proc.wait()
            return
        self._idle.append(proc)

    def _refill(self) -> None:
        missing = self.size - len(self._idle) - len(self._starting)
        for _ in range(max(0, missing)):
            task = asyncio.ensure_future(self._spawn())
            self._starting.add(task)
            task.add_done_callback(self._starting.discard)

    async def preload(self, module: str) -> None:
        """Make every idle process (and every later one) import ``module``."""
        if module in self._preloaded:
            return
        self._preloaded.append(module)
        line = orjson.dumps({"op": "preload", "module": module}) + b"\n"
        for proc in list(self._idle):
            assert proc.stdin is not None
            try:
                proc.stdin.write(line)
                await proc.stdin.drain()
            except (ConnectionError, BrokenPipeError):
                self._idle.remove(proc)

    async def deploy(self, deployment: dict[str, object]) -> asyncio.subprocess.Process:
        """Hand ``deployment`` to an idle process (starting one if none is ready)."""
        while True:
            while not self._idle:
                if not self._starting:
                    self._refill()
                    if not self._starting:  # size 0: start one just for this deploy
                        await self._spawn()
                        continue
                await asyncio.wait(set(self._starting), return_when=asyncio.FIRST_COMPLETED)
            proc = self._idle.pop(0)
            if proc.returncode is not None:
                continue
            self._refill()
            assert proc.stdin is not None
            try:
                proc.stdin.write(orjson.dumps({"op": "deploy", **deployment}) + b"\n")
                await proc.stdin.drain()
            except (ConnectionError, BrokenPipeError):
                continue
            return proc

    async def close(self) -> None:
        self._closed = True
        for task in list(self._starting):
            task.cancel()
        for proc in self._idle:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in self._idle:
            await proc.wait()
        self._idle.clear()


def task_log_path(work_dir: Path, job_id: str, task: str, attempt: int) -> Path:
    """Where a task process writes its stdout and stderr."""
    safe = task.replace("#", "-").replace("/", "_")
    return work_dir / job_id / f"{safe}.attempt{attempt}.log"
