"""The tests of ``make test`` (after setup and lint), in two parts where Docker can run.

0. **browser**: Debian's chromium for the dashboard test, found or installed as root
   (``scripts.browser``); without it that test is skipped with the reason.
1. **engine**: a Docker engine that answers, or one installed (Debian's docker.io,
   debootstrap, docker-compose) and started here (``scripts.engine``); or the reason
   none can run (not root, no apt-get, ...).
2. **images**: ``streamer-base:bookworm``, ``streamer-kafka:<version>`` and
   ``streamer:dev``, built without any registry, once (``scripts.images``).
3. **part 1, local broker**: pytest over everything but the container part, with
   ``STREAMER_KAFKA_BACKEND=local`` (the broker from the Maven-resolved jars).
4. **part 2, container broker**: pytest over ``CONTAINER_PART`` (the integration
   suite, the failover and exactly-once e2e tests, the compose e2e test) with
   ``STREAMER_KAFKA_BACKEND=container``: the session's broker is a Kafka container
   started through testcontainers.
5. **cleanup**: containers of ours left behind are removed; dockerd, if started here,
   is stopped by its pid.

Without an engine, step 3 is one pytest run over everything on the local broker, and
the container tests are reported as skipped with the reason (``STREAMER_DOCKER_UNAVAILABLE``).
Given test paths (``make test PYTEST_ARGS=tests/unit``), one run over those. The end
of the output says what each step did, how long it took and which broker each part used.

    python -m scripts.testrun [PYTEST_ARGS...]
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamer.testing.kafka import CONTAINER_LABEL, ENV_BACKEND, ENV_DOCKER_UNAVAILABLE, ENV_IMAGE

REPO = Path(__file__).resolve().parents[1]
CONTAINER_PART = (
    "tests/integration",
    "tests/e2e/test_failover.py",
    "tests/e2e/test_exactly_once.py",
    "tests/e2e/test_compose.py",
)
COMPOSE_PROJECT_PREFIX = "streamer-e2e-"


@dataclass(frozen=True)
class Part:
    name: str
    args: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)


def names_paths(args: Sequence[str], root: Path = REPO) -> bool:
    """Whether pytest ``args`` name test paths of their own (then they are run as given)."""
    return any(
        not a.startswith("-") and (root / a.split("::")[0]).exists() for a in args if a.strip()
    )


def plan_parts(
    pytest_args: Sequence[str], engine_env: Mapping[str, str] | None, no_engine: str = ""
) -> list[Part]:
    """The pytest runs: two parts with an engine (``engine_env``: its DOCKER_HOST and
    images), else one with the reason the container tests are skipped."""
    args = tuple(pytest_args)
    if engine_env is None:
        return [Part("all tests (no Docker engine)", args, {ENV_DOCKER_UNAVAILABLE: no_engine})]
    if names_paths(args):
        return [Part("the given tests", args, dict(engine_env))]
    ignore = tuple(f"--ignore={p}" for p in CONTAINER_PART)
    return [
        Part("part 1: all but the container part", (*args, *ignore), {ENV_BACKEND: "local"}),
        Part(
            "part 2: integration, failover, exactly-once, compose",
            (*args, *CONTAINER_PART),
            {**engine_env, ENV_BACKEND: "container"},
        ),
    ]


@dataclass
class Step:
    name: str
    seconds: float
    result: str


def fmt(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def run_part(part: Part, pytest: str) -> tuple[int, str]:
    """Run one pytest part; return its exit code and its report line."""
    with tempfile.NamedTemporaryFile(prefix="streamer-report-", suffix=".json") as tmp:
        env = {**os.environ, **part.env, "STREAMER_TEST_REPORT": tmp.name}
        print(f"\n===== {part.name}: pytest {' '.join(part.args)}", flush=True)
        code = subprocess.call([pytest, *part.args], env=env, cwd=REPO)
        try:
            report = json.loads(Path(tmp.name).read_text() or "{}")
        except (OSError, ValueError):
            report = {}
    outcomes = ", ".join(f"{n} {k}" for k, n in sorted(report.get("outcomes", {}).items()))
    line = report.get("line", "streamer: (no report)").removeprefix("streamer: ")
    return code, f"exit {code}: {outcomes or 'no outcomes'}. {line}"


def remove_our_containers(env: Mapping[str, str]) -> str:
    """Containers, networks and volumes of ours still on the engine (a test that died
    before its own cleanup): the Kafka containers' label and the compose projects."""
    import importlib

    try:
        docker = importlib.import_module("docker")
        client = docker.DockerClient(base_url=env["DOCKER_HOST"], timeout=30)
    except Exception as exc:  # noqa: BLE001 - only for the report
        return f"could not look for leftovers: {exc}"
    removed: list[str] = []
    try:
        for c in client.containers.list(all=True):
            labels = c.labels or {}
            project = labels.get("com.docker.compose.project", "")
            if CONTAINER_LABEL in labels or project.startswith(COMPOSE_PROJECT_PREFIX):
                c.remove(force=True, v=True)
                removed.append(c.name)
        for n in client.networks.list():
            if n.name.startswith(COMPOSE_PROJECT_PREFIX):
                n.remove()
                removed.append(n.name)
        for v in client.volumes.list():
            if v.name.startswith(COMPOSE_PROJECT_PREFIX):
                v.remove(force=True)
                removed.append(v.name)
    finally:
        client.close()
    return f"removed leftovers {removed}" if removed else "no containers left behind"


def main(argv: Sequence[str] | None = None) -> int:
    from scripts.browser import prepare_test_environment
    from scripts.engine import Engine, NoEngine, ensure_engine
    from scripts.images import KAFKA_IMAGE, STREAMER_IMAGE, ImageError, ensure_images

    pytest_args = list(sys.argv[1:] if argv is None else argv)
    pytest = str(Path(sys.executable).with_name("pytest"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below
    steps: list[Step] = []
    engine: Engine | None = None
    engine_env: dict[str, str] | None = None
    no_engine = ""
    codes: list[int] = []
    try:
        started = time.monotonic()
        browser = prepare_test_environment()
        steps.append(Step("browser", time.monotonic() - started, browser))
        started = time.monotonic()
        try:
            engine = ensure_engine()
            steps.append(
                Step(
                    "engine", time.monotonic() - started, "; ".join([*engine.notes, engine.version])
                )
            )
            engine_env = engine.env()
        except NoEngine as exc:
            no_engine = str(exc)
            steps.append(Step("engine", time.monotonic() - started, f"none: {no_engine}"))
        if engine_env is not None:
            started = time.monotonic()
            try:
                env = {**os.environ, **engine_env}
                built = ensure_images(env)
                steps.append(
                    Step("images", time.monotonic() - started, "; ".join(b.line() for b in built))
                )
                engine_env[ENV_IMAGE] = os.environ.get(ENV_IMAGE) or KAFKA_IMAGE
                engine_env["STREAMER_IMAGE"] = os.environ.get("STREAMER_IMAGE") or STREAMER_IMAGE
            except ImageError as exc:
                no_engine = f"the images could not be built without a registry: {exc}"
                steps.append(Step("images", time.monotonic() - started, f"failed: {no_engine}"))
                engine_env = None
        for part in plan_parts(pytest_args, engine_env, no_engine):
            started = time.monotonic()
            code, line = run_part(part, pytest)
            codes.append(0 if code == 5 else code)  # 5: nothing collected in this part
            steps.append(Step(part.name, time.monotonic() - started, line))
    finally:
        if engine is not None:
            started = time.monotonic()
            notes = [remove_our_containers(engine.env()), engine.stop()]
            steps.append(Step("cleanup", time.monotonic() - started, "; ".join(notes)))
        print("\n===== streamer: the test run, step by step", flush=True)
        for step in steps:
            print(f"  {fmt(step.seconds)}  {step.name}: {step.result}", flush=True)
    return max(codes, default=1)


if __name__ == "__main__":
    raise SystemExit(main())
