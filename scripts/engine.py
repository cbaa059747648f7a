"""A Docker engine for streamer's container tests: use one that answers, or install
and start one, and stop only what was started here.

``ensure_engine()`` decides in this order (``decide`` is the pure part, unit-tested):

1. ``STREAMER_DOCKER=off``: no engine, with that reason.
2. An engine already answers (``DOCKER_HOST``, the default socket, or the socket of
   an engine another run of this module started): use it as it is, never stop it.
3. Not Linux, or not root: no engine (dockerd and debootstrap need root).
4. ``dockerd`` missing (or ``debootstrap`` / ``docker-compose``, which the images and
   the compose test need): install Debian's ``docker.io`` / ``debootstrap`` /
   ``docker-compose`` with apt-get, on Debian or Ubuntu only.
5. Start ``dockerd --ip=127.0.0.1`` on a socket of its own
   (``/run/streamer-docker/docker.sock``, data in ``/var/lib/streamer-docker``), so
   nothing else on the machine takes it for the system's engine, and wait until it
   answers a ping.

``Engine.stop()`` stops that dockerd by the pid this process started (SIGTERM, then
SIGKILL for it and the containerd it started), once every other run that uses it
has let go of it (each holds a shared flock on ``users.lock`` while it does).

    python -m scripts.engine status          # what would be used, or why none
    python -m scripts.engine run -- CMD ...  # CMD with DOCKER_HOST set; stops what it started
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from streamer.testing.kafka import ENV_DOCKER_UNAVAILABLE, docker_ping

RUN_DIR = Path(os.environ.get("STREAMER_DOCKER_RUN_DIR", "/run/streamer-docker"))
DATA_ROOT = Path(os.environ.get("STREAMER_DOCKER_DATA_ROOT", "/var/lib/streamer-docker"))
OUR_HOST = f"unix://{RUN_DIR / 'docker.sock'}"
DEFAULT_HOST = "unix:///var/run/docker.sock"
ENV_SWITCH = "STREAMER_DOCKER"  # "off" (or 0/no/false): never use or start an engine

# command -> the Debian package that provides it
PACKAGES = {
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "docker-compose": "docker-compose",
}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


# ------------------------------------------------------------------- deciding
@dataclass(frozen=True)
class HostFacts:
    """What ``decide`` needs to know about this machine (``host_facts()`` reads it)."""

    system: str  # platform.system()
    euid: int
    os_ids: frozenset[str]  # ID and ID_LIKE of /etc/os-release
    commands: frozenset[str]  # of dockerd, apt-get, debootstrap, docker-compose: those on PATH
    switch: str = ""  # $STREAMER_DOCKER


@dataclass(frozen=True)
class Decision:
    action: Literal["use", "start", "none"]
    host: str = ""  # the engine to use ("use") or the socket to start it on ("start")
    install: tuple[str, ...] = ()  # Debian packages to install first
    reason: str = ""  # "none": why no engine can run here


def decide(facts: HostFacts, answering: str | None) -> Decision:
    """Which engine to use, whether to install and start one, or why there is none.

    ``answering`` is the address of an engine that already answers a ping, if any.
    Missing tools are installed even next to an engine that answers (when allowed):
    the images need debootstrap, the compose test docker-compose.
    """
    if facts.switch.strip().lower() in {"off", "0", "no", "false"}:
        return Decision("none", reason=f"{ENV_SWITCH}={facts.switch} turns the Docker engine off")
    can_install = (
        facts.system == "Linux"
        and facts.euid == 0
        and "apt-get" in facts.commands
        and bool(facts.os_ids & {"debian", "ubuntu"})
    )
    missing = [cmd for cmd in PACKAGES if cmd not in facts.commands]
    if answering:
        extra = [PACKAGES[c] for c in missing if c != "dockerd"] if can_install else []
        return Decision("use", host=answering, install=tuple(extra))
    if facts.system != "Linux":
        why = f"on {facts.system} make test does not start one (start Docker, or set DOCKER_HOST)"
        return Decision("none", reason=f"no Docker engine answers, and {why}")
    if facts.euid != 0:
        why = (
            "make test runs as a user who is not root, so it cannot install or start dockerd "
            "(run it as root, or start Docker and set DOCKER_HOST)"
        )
        return Decision("none", reason=f"no Docker engine answers, and {why}")
    if "dockerd" not in facts.commands and not can_install:
        what = "has no apt-get" if "apt-get" not in facts.commands else "is not Debian or Ubuntu"
        why = f"make test installs Debian's docker.io only, and this machine {what}"
        return Decision(
            "none", reason=f"no Docker engine answers and no dockerd is installed; {why}"
        )
    install = tuple(PACKAGES[c] for c in missing) if can_install else ()
    return Decision("start", host=OUR_HOST, install=install)


def read_os_ids(text: str) -> frozenset[str]:
    """``ID`` and the words of ``ID_LIKE`` from the text of /etc/os-release."""
    ids: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key in {"ID", "ID_LIKE"}:
            ids.update(value.strip().strip("\"'").lower().split())
    return frozenset(ids)


def host_facts(env: Mapping[str, str] | None = None) -> HostFacts:
    env = os.environ if env is None else env
    try:
        os_release = Path("/etc/os-release").read_text()
    except OSError:
        os_release = ""
    wanted = ["apt-get", *PACKAGES]
    return HostFacts(
        system=platform.system(),
        euid=os.geteuid(),
        os_ids=read_os_ids(os_release),
        commands=frozenset(c for c in wanted if shutil.which(c, path=_sbin_path(env))),
        switch=env.get(ENV_SWITCH, ""),
    )


def _sbin_path(env: Mapping[str, str]) -> str:
    """PATH plus the sbin directories, where dockerd and debootstrap live."""
    parts = env.get("PATH", os.defpath).split(os.pathsep)
    for extra in ("/usr/local/sbin", "/usr/sbin", "/sbin"):
        if extra not in parts:
            parts.append(extra)
    return os.pathsep.join(parts)


def candidate_hosts(env: Mapping[str, str]) -> list[str]:
    """Where an engine may already answer: DOCKER_HOST if set (only it), else the
    default socket, then ours."""
    if env.get("DOCKER_HOST", "").strip():
        return [env["DOCKER_HOST"].strip()]
    return [DEFAULT_HOST, OUR_HOST]


# ------------------------------------------------------------------- running
@dataclass
class Engine:
    """An engine that answers at ``host``; ``proc`` is set when this process started it."""

    host: str
    proc: subprocess.Popen[bytes] | None = None
    version: str = ""
    notes: list[str] = field(default_factory=list)  # what was done to get it, for the report
    _users_lock: IO[bytes] | None = None

    @property
    def started_here(self) -> bool:
        return self.proc is not None

    def env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.host}

    def stop(self, *, wait_for_others: float = 1800.0) -> str:
        """Stop dockerd if this process started it (by its pid); say what happened."""
        if self.proc is None:
            self._release()
            return f"engine at {self.host} left running (not started by this run)"
        started = time.monotonic()
        self._release()
        waited = _wait_exclusive(RUN_DIR / "users.lock", wait_for_others)
        pid = self.proc.pid
        children = child_pids(pid)
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
            how = "SIGTERM"
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            how = "SIGKILL after SIGTERM timed out"
        for child in children:  # the containerd it started, should it outlive a SIGKILL
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        # dockerd leaves its bind mount of the host's network namespace behind
        netns = RUN_DIR / "exec" / "netns" / "default"
        subprocess.run(["umount", str(netns)], capture_output=True, check=False)
        self.proc = None
        note = " (waited for another run to finish with it)" if waited else ""
        return f"dockerd pid {pid} stopped by {how} in {time.monotonic() - started:.1f} s{note}"

    def _release(self) -> None:
        if self._users_lock is not None:
            self._users_lock.close()
            self._users_lock = None


def child_pids(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _wait_exclusive(path: Path, timeout: float) -> bool:
    """Take ``path``'s lock exclusively (every shared holder gone); True if that waited."""
    waited = False
    deadline = time.monotonic() + timeout
    with open(path, "ab") as fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return waited
            except BlockingIOError:
                if time.monotonic() > deadline:
                    return waited
                waited = True
                time.sleep(1.0)


class NoEngine(Exception):
    """No engine can run here; the message is the reason (for the report and skips)."""


def ensure_engine(env: Mapping[str, str] | None = None, *, log: IO[str] = sys.stderr) -> Engine:
    """An engine that answers, installing and starting one when that is allowed here.

    Raises ``NoEngine`` with the reason otherwise."""
    env = os.environ if env is None else env
    facts = host_facts(env)
    answering = next((h for h in candidate_hosts(env) if docker_ping(base_url=h)), None)
    decision = decide(facts, answering)
    if decision.action == "none":
        raise NoEngine(decision.reason)
    notes: list[str] = []
    if decision.install:
        notes.append(apt_install(decision.install, log=log))
    if decision.action == "use":
        engine = Engine(decision.host, notes=notes)
    else:
        RUN_DIR.mkdir(parents=True, exist_ok=True)
        with _locked(RUN_DIR / "start.lock"):
            if docker_ping(base_url=OUR_HOST):  # a concurrent run started it meanwhile
                engine = Engine(OUR_HOST, notes=[*notes, "using the engine another run started"])
            else:
                engine = start_dockerd(notes, log=log)
    engine.version = engine_version(engine.host)
    if engine.host == OUR_HOST:
        engine._users_lock = open(RUN_DIR / "users.lock", "ab")  # noqa: SIM115 - held until stop
        fcntl.flock(engine._users_lock, fcntl.LOCK_SH)
    return engine


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "ab") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def apt_install(packages: Sequence[str], *, log: IO[str]) -> str:
    """``apt-get install`` Debian's packages (``apt-get update`` and once more if that fails)."""
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", *packages]  # with recommends, as tried
    print(f"installing {' '.join(packages)} with apt-get ...", file=log, flush=True)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        raise NoEngine(
            f"apt-get install {' '.join(packages)} failed: {(lines or ['?'])[-1].strip()[:200]}"
        )
    return f"installed {' '.join(packages)} with apt-get in {time.monotonic() - started:.0f} s"


def start_dockerd(notes: list[str], *, log: IO[str]) -> Engine:
    dockerd = shutil.which("dockerd", path=_sbin_path(os.environ))
    if dockerd is None:
        raise NoEngine("dockerd is not on PATH after installing docker.io")
    sock = RUN_DIR / "docker.sock"
    cmd = [
        dockerd, f"--host={OUR_HOST}", f"--pidfile={RUN_DIR / 'dockerd.pid'}",
        f"--exec-root={RUN_DIR / 'exec'}", f"--data-root={DATA_ROOT}",
        "--ip=127.0.0.1", "--log-level=warn",
    ]  # fmt: skip
    print(f"starting {' '.join(cmd)}", file=log, flush=True)
    logfile = RUN_DIR / "dockerd.log"
    started = time.monotonic()
    with open(logfile, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, env={**os.environ, "PATH": _sbin_path(os.environ)},
            preexec_fn=_terminate_with_parent,
        )  # fmt: skip
    deadline = started + START_TIMEOUT
    while not (sock.exists() and docker_ping(base_url=OUR_HOST)):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
            raise NoEngine(
                f"dockerd did not answer within {START_TIMEOUT:.0f} s (exit {proc.returncode}); "
                f"last lines of {logfile}: {' | '.join(tail(logfile, 3))}"
            )
        time.sleep(0.2)
    notes.append(
        f"started dockerd pid {proc.pid} on {OUR_HOST} (answered in "
        f"{time.monotonic() - started:.1f} s; log {logfile})"
    )
    return Engine(OUR_HOST, proc=proc, notes=notes)


def _terminate_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """SIGTERM (a clean shutdown) to dockerd should the run that started it die first."""
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def engine_version(host: str) -> str:
    import importlib

    try:
        docker = importlib.import_module("docker")  # by name: docker/ here shadows it for mypy
        client = docker.DockerClient(base_url=host, timeout=5)
        try:
            version = client.version()
        finally:
            client.close()
        return f"Docker Engine {version.get('Version', '?')} (API {version.get('ApiVersion', '?')})"
    except Exception as exc:  # noqa: BLE001 - only for the report
        return f"version unknown ({exc})"


def tail(path: Path, lines: int) -> list[str]:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ["(no log)"]
    return [ln.strip()[:200] for ln in text[-lines:]]


# ----------------------------------------------------------------------- CLI
def main(argv: Iterable[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in {"status", "run"}:
        print(__doc__, file=sys.stderr)
        return 2
    if args[0] == "status":
        facts = host_facts()
        answering = next((h for h in candidate_hosts(os.environ) if docker_ping(base_url=h)), None)
        print(decide(facts, answering))
        return 0
    cmd = args[1:]
    if cmd[:1] == ["--"]:
        cmd = cmd[1:]
    if not cmd:
        print("usage: python -m scripts.engine run -- CMD ...", file=sys.stderr)
        return 2
    try:
        engine = ensure_engine()
    except NoEngine as exc:
        print(f"no Docker engine: {exc}", file=sys.stderr)
        return subprocess.call(cmd, env={**os.environ, ENV_DOCKER_UNAVAILABLE: str(exc)})
    for note in engine.notes:
        print(note, file=sys.stderr)
    try:
        return subprocess.call(cmd, env={**os.environ, **engine.env()})
    finally:
        print(engine.stop(), file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
