"""Entry point of a task process: ``python -P -m streamer.runtime.task_process [--preload MOD]``.

Started idle by a worker's ``WarmPool``: imports the runtime and its heavy
dependencies, says ``ready`` on stdout, then reads JSON lines on stdin
(``preload`` a job module, or ``deploy`` a task and run it). Once deployed,
stdout and stderr go to the task's log file and the process exits with 0
(finished or canceled) or 1 (failed). It dies with its worker (PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import importlib
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import orjson

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


def _warm_up() -> None:
    """Import what every task needs, so a deploy does not pay for it."""
    import confluent_kafka  # noqa: F401
    import rocksdict  # noqa: F401

    import netlayer.gate
    import netlayer.partition
    import netlayer.transport  # noqa: F401
    import streamer.runtime.task  # noqa: F401

    _warm_up_rocksdb()


def _warm_up_rocksdb() -> None:
    """Open and close a scratch database: RocksDB's first open in a process starts its
    background threads and caches; a keyed task's restore should not pay for that."""
    import shutil
    import tempfile

    import rocksdict

    from streamer.state._layout import rocks_options

    scratch = tempfile.mkdtemp(prefix="streamer-warm-")
    try:
        rocksdict.Rdict(f"{scratch}/db", rocks_options()).close()
    except Exception as exc:  # noqa: BLE001 - only a warm-up: the task's own open reports
        print(f"RocksDB warm-up failed: {exc}", file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _redirect_output(log_file: str | None) -> None:
    if not log_file:
        return
    path = Path(log_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def run_deployment(deployment: dict[str, Any]) -> int:
    from streamer.rpc import TaskState
    from streamer.runtime.task import Task

    config = deployment.get("config", {})
    _redirect_output(config.get("log_file"))
    logging.basicConfig(
        level=getattr(logging, str(config.get("log_level", "INFO")).upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s [{deployment.get('task')}@"
        f"{deployment.get('attempt')}] %(name)s: %(message)s",
    )
    try:
        task = Task(deployment)
    except Exception:
        logging.getLogger(__name__).exception("could not create task %s", deployment.get("task"))
        return 1
    state = asyncio.run(task.run())
    return 1 if state == TaskState.FAILED else 0


def _preload(module: str) -> None:
    """Import a job module ahead of its deploy; a module `load_job` would refuse (the
    standard library, ``pkg.__main__``) is not imported. Failures are only printed: the
    deploy reports them, clearly."""
    from streamer.api.loader import check_job_module

    try:
        check_job_module(module)
        importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 - a bad module fails at deploy, clearly
        print(f"preload of {module} failed: {exc}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    from streamer.api.loader import drop_working_directory_from_path

    drop_working_directory_from_path()  # started with -P by a worker; by hand, maybe not
    parser = argparse.ArgumentParser(prog="streamer.runtime.task_process")
    parser.add_argument("--preload", action="append", default=[])
    args = parser.parse_args(argv)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the CLI, which cancels
    _warm_up()
    for module in args.preload:
        _preload(module)
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.buffer.flush()
    for line in sys.stdin.buffer:
        message = orjson.loads(line)
        op = message.pop("op", None)
        if op == "preload":
            _preload(str(message["module"]))
        elif op == "deploy":
            sys.stdin.close()
            return run_deployment(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
