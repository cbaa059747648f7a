"""A real coordinator (``python -m streamer.coordinator``, one worker) given hostile job
references by ``streamer submit``: each is refused with one clear line before any of
its code runs, the coordinator survives, and a module in its working directory is
not importable. No Kafka is needed: nothing gets as far as running a task."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]
PLANTED = "streamer_planted_job"  # a job module in the coordinator's working directory


@dataclass
class Remote:
    address: str
    cwd: Path  # the coordinator's and the worker's working directory
    env: dict[str, str]
    coordinator: subprocess.Popen[bytes]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    cwd = tmp_path_factory.mktemp("coordinator-cwd")
    (cwd / f"{PLANTED}.py").write_text(
        "import pathlib, streamer\n"
        "pathlib.Path(__file__).with_suffix('.imported').write_text('imported')\n"
        "@streamer.job\n"
        "def job():\n"
        "    raise RuntimeError('planted job ran')\n"
    )
    # job modules come from PYTHONPATH (the repository: examples.*), as in the docs
    env = {**os.environ, "PYTHONPATH": str(REPO), "STREAMER_HOME": str(cwd / "home")}
    ready = cwd / "ready.json"
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(args: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(cwd / log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", *args],  # no -P: `python -m` puts cwd on sys.path
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        procs.append(proc)
        return proc

    try:
        coordinator = spawn(
            ["streamer.coordinator", "--port", "0", "--status-port", "0",
             "--ready-file", str(ready)],
            "coordinator.log",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert coordinator.poll() is None, (cwd / "coordinator.log").read_text()
            assert time.monotonic() < deadline, "the coordinator did not start"
            time.sleep(0.05)
        info = orjson.loads(ready.read_bytes())
        spawn(
            ["streamer.runtime.worker", "--coordinator", info["address"], "--slots", "2",
             "--id", "w1", "--warm", "0", "--work-dir", str(cwd / "work")],
            "worker.log",
        )  # fmt: skip
        url = f"http://127.0.0.1:{info['status_port']}/workers"
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as resp:
                if orjson.loads(resp.read()):
                    break
            assert time.monotonic() < deadline + 30, "the worker did not register"
            time.sleep(0.1)
        yield Remote(info["address"], cwd, env, coordinator)
    finally:
        for proc in reversed(procs):
            _stop(proc)


def submit(remote: Remote, ref: str, *params: str) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "streamer.cli", "submit", ref, "--coordinator", remote.address,
            "--bootstrap-servers", "127.0.0.1:1", "--no-broker-check"]  # fmt: skip
    for param in params:
        args += ["--param", param]
    return subprocess.run(
        args, capture_output=True, text=True, env=remote.env, cwd=REPO, timeout=60, check=False
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("ref", ["subprocess:getoutput", "os:system", "os:abort"])
def test_standard_library_references_are_refused_and_run_nothing(
    remote: Remote, tmp_path: Path, ref: str
) -> None:
    touched = tmp_path / "touched"
    result = submit(remote, ref, f"touch {touched}=")  # ran `touch` before the fix
    assert not touched.exists()
    assert remote.coordinator.poll() is None  # os:abort used to kill it
    line = one_error_line(result)
    assert line == (
        f"error: coordinator failed submit_job: JobLoadError: job reference '{ref}' is not a "
        f"streamer job: '{ref.partition(':')[0]}' is a standard-library module; jobs live in "
        "your own modules (on PYTHONPATH or installed), marked with @streamer.job"
    )


def test_an_unmarked_callable_in_a_job_module_is_refused(remote: Remote) -> None:
    # examples.keyed_count imports sys: sys.exit used to be called (and SystemExit
    # is no Exception)
    line = one_error_line(submit(remote, "examples.keyed_count:sys.exit"))
    assert line.endswith(
        "job reference 'examples.keyed_count:sys.exit' is not a streamer job (an unmarked "
        "function): mark the function with @streamer.job, or point at a Job or "
        "StreamEnvironment"
    )
    assert remote.coordinator.poll() is None


def test_a_module_in_the_coordinators_working_directory_is_not_imported(remote: Remote) -> None:
    line = one_error_line(submit(remote, f"{PLANTED}:job"))
    assert line.endswith(
        f"cannot import job module '{PLANTED}': ModuleNotFoundError: No module named '{PLANTED}'"
    )
    assert not (remote.cwd / f"{PLANTED}.imported").exists()


def test_a_marked_job_on_the_pythonpath_loads(remote: Remote) -> None:
    # loaded and built: refused only for want of slots (8 tasks, 2 slots), so no task starts
    line = one_error_line(submit(remote, "examples.keyed_count:job"))
    assert line.endswith(
        "job needs 8 slots but the workers have 2 free: start more workers or give them "
        "more --slots"
    )
