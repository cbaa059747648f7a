"""docker/compose.yaml for real: Kafka, a coordinator and two workers as containers.

The stack comes up once for the module (``docker compose`` v2 or Debian's
``docker-compose`` v1, whichever is here), on ports of its own. Each test creates
its topics from the host, submits the order join (3 sources x2 -> join x4, each
join chained with its exactly-once sink, checkpoints every 0.4 s), feeds orders,
payments and shipments from the host, and ``docker kill``s one worker container
mid-run. The job must recover on the surviving worker, and the committed output
is checked against the join's oracle (``examples.order_join.expected_results``):

- ``full`` / ``region``: exactly the oracle's orders, each once;
- ``individual``: every failover restarted only its own task; an order may be
  missing only when its key group belongs to a failed join task, or one of its
  records was in a partition that a failed source task replays (a restarted
  source re-reads from its checkpoint, so those orders may also be duplicated);
  every other order is exact.

Then the killed container is started again for the next test, and at the end the
whole stack (containers, network, checkpoint volume) is removed, also when a test
fails. Where no engine, compose or images are available the tests are skipped
with the reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from examples.order_join import TOPICS, _interleaved, expected_results, generate_events
from streamer.graph import subtask_for_key
from streamer.rpc.client import CoordinatorClient
from streamer.security.secret import derive
from streamer.testing import TopicFactory, read_topic
from streamer.testing.kafka import (
    choose_kafka_image,
    engine_answers,
    image_present,
    no_engine_reason,
)

pytestmark = [pytest.mark.docker, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker" / "compose.yaml"
ORDERS = 1500
RATE = 250.0  # orders per second of event time, replayed at that speed
PARTITIONS = 4  # per input topic; source subtask s reads partitions p with p % 2 == s
JOIN_PARALLELISM = 4
SERVICES = ("kafka", "coordinator", "worker1", "worker2")

Status = dict[str, Any]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def compose_command() -> list[str] | None:
    """``docker compose`` (v2) if the plugin is there, else ``docker-compose`` (v1);
    ``STREAMER_COMPOSE`` chooses explicitly (e.g. ``docker-compose``)."""
    given = os.environ.get("STREAMER_COMPOSE", "").split()
    if given:
        return given
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        return [docker, "compose"]
    v1 = shutil.which("docker-compose")
    return [v1] if v1 else None


class Stack:
    """One compose project: started, inspected, and removed by its project name."""

    def __init__(self, compose: list[str], env: dict[str, str]) -> None:
        self.project = f"streamer-e2e-{uuid.uuid4().hex[:8]}"
        self.compose = compose
        self.kafka_port, self.rpc_port, self.status_port = free_port(), free_port(), free_port()
        self.env = {
            **os.environ,
            **env,
            "STREAMER_KAFKA_HOST_PORT": str(self.kafka_port),
            "STREAMER_COORDINATOR_PORT": str(self.rpc_port),
            "STREAMER_STATUS_PORT": str(self.status_port),
            "STREAMER_WORKER_SLOTS": "12",  # either worker can hold the whole job (10 tasks)
            "STREAMER_CLUSTER_SECRET": secrets.token_hex(32),  # this stack's own
        }
        self.bootstrap = f"127.0.0.1:{self.kafka_port}"
        secret = bytes.fromhex(self.env["STREAMER_CLUSTER_SECRET"])
        self.client = CoordinatorClient(f"127.0.0.1:{self.rpc_port}", secret=secret)
        version = subprocess.run([*compose, "version"], capture_output=True, text=True, check=False)
        self.v1 = "docker-compose version 1." in version.stdout

    def run(self, *args: str, timeout: float = 300) -> str:
        cmd = [*self.compose, "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        proc = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(cmd[len(self.compose) :])} failed: {proc.stderr[-2000:]}"
            )
        return proc.stdout

    def up(self) -> None:
        pull = [] if self.v1 else ["--pull", "never"]
        self.run("up", "-d", "--no-build", *pull, *SERVICES)
        deadline = time.monotonic() + 120
        while len(self.workers()) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError(f"2 workers did not register in 120 s: {self.workers()}")
            time.sleep(0.5)
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        while not admin.list_topics(timeout=5).brokers:
            if time.monotonic() > deadline:
                raise TimeoutError("Kafka did not answer on its host port in 120 s")
            time.sleep(0.5)

    def workers(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.status_port}/workers"
        token = derive(bytes.fromhex(self.env["STREAMER_CLUSTER_SECRET"]), "status").hex()
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=3) as resp:
                workers: list[dict[str, Any]] = orjson.loads(resp.read())
                return workers
        except OSError:
            return []

    def container(self, service: str) -> str:
        """The id of ``service``'s container, running or not."""
        return self.run("ps", "-a", "-q", service).strip()

    def docker(self, *args: str) -> str:
        cli = shutil.which("docker") or "docker"
        proc = subprocess.run(
            [cli, *args], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def logs(self, lines: int = 40) -> str:
        try:
            return self.run("logs", "--no-color", "--tail", str(lines), timeout=60)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return f"(no logs: {exc})"

    def down(self) -> None:
        """Remove everything of the project; fall back to docker itself if compose fails."""
        try:
            self.run("down", "-v", "--remove-orphans", "-t", "5", timeout=180)
        except (RuntimeError, subprocess.TimeoutExpired):
            label = f"label=com.docker.compose.project={self.project}"
            ids = self.docker("ps", "-aq", "--filter", label).split()
            if ids:
                self.docker("rm", "-f", "-v", *ids)
            for kind in ("network", "volume"):
                for name in self.docker(kind, "ls", "-q", "--filter", label).split():
                    self.docker(kind, "rm", name)

    # ------------------------------------------------------------------ jobs
    def status(self, job_id: str) -> Status:
        return self.client.status(job_id)

    def wait_for(self, job_id: str, pred: Any, what: str, timeout: float = 120) -> Status:
        deadline = time.monotonic() + timeout
        status: Status = {}
        while time.monotonic() < deadline:
            status = self.status(job_id)
            if pred(status):
                return status
            time.sleep(0.2)
        tasks = [(t["task"], t["state"], t["attempt"]) for t in status.get("tasks", [])]
        records = [
            (r["task"], r["cause"], r["status"], r["tasks_restarted"])
            for r in status.get("failovers", [])
        ]
        raise TimeoutError(
            f"{what} not reached in {timeout:.0f} s: {status.get('state')} {tasks}; "
            f"failovers {records}"
        )


def unavailable_reason() -> str | None:
    """Why the compose test cannot run here, or None."""
    if not engine_answers():
        return no_engine_reason(os.environ)
    if compose_command() is None:
        return "NOT RUN: neither `docker compose` (v2) nor `docker-compose` (v1) is installed"
    return None


def images() -> dict[str, str]:
    """The images the stack runs; built (scripts/images.py) where they are missing."""
    streamer_image = os.environ.get("STREAMER_IMAGE", "").strip() or "streamer:dev"
    kafka_image = choose_kafka_image(os.environ, image_present)
    if not (image_present(streamer_image) and image_present(kafka_image)):
        from scripts.images import ImageError, ensure_images

        try:
            ensure_images()
        except ImageError as exc:
            pytest.skip(f"NOT RUN: the images could not be built: {exc}")
        kafka_image = choose_kafka_image(os.environ, image_present)
    return {"STREAMER_IMAGE": streamer_image, "STREAMER_KAFKA_IMAGE": kafka_image}


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    compose = compose_command()
    assert compose is not None
    s = Stack(compose, images())
    try:
        try:
            s.up()
        except BaseException:
            print(s.logs(), flush=True)
            raise
        yield s
    finally:
        s.down()


@contextlib.contextmanager
def logs_on_failure(stack: Stack) -> Iterator[None]:
    """A failing test prints the tail of every container's log (shown in the report)."""
    try:
        yield
    except BaseException:
        print(stack.logs(), flush=True)
        raise


def partition_of(order_id: str) -> int:
    """Every record of an order goes to the same partition index of its topic; a hash
    of its own, unrelated to the key group."""
    return zlib.adler32(order_id.encode()) % PARTITIONS


def feed(bootstrap: str, topics: dict[str, str], events: dict[str, list[dict[str, Any]]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 2})
    started = time.monotonic()
    base = min(e["ts"] for e in events["orders"])
    for topic, event in _interleaved(events):
        oid = event["order_id"]
        producer.produce(
            topics[topic], orjson.dumps(event), key=oid.encode(), partition=partition_of(oid)
        )
        producer.poll(0)
        delay = started + (event["ts"] - base) / 1000.0 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    assert producer.flush(30) == 0


def all_running(s: Status) -> bool:
    return s["state"] == "RUNNING" and all(t["state"] == "RUNNING" for t in s["tasks"])


@pytest.mark.parametrize("strategy", ["full", "region", "individual"])
def test_killing_a_worker_container_mid_job(strategy: str, stack: Stack) -> None:
    with logs_on_failure(stack), TopicFactory(stack.bootstrap) as topics:
        run_and_check(stack, topics, strategy)


def run_and_check(stack: Stack, topics: TopicFactory, strategy: str) -> None:
    inputs = {t: topics.create(PARTITIONS) for t in TOPICS}
    out = topics.create(2)
    events = generate_events(ORDERS, seed=23, rate=RATE)
    oracle = expected_results(events)
    victim = stack.container("worker2")
    job_id = stack.client.submit(
        "examples.order_join:job",
        {
            "strategy": strategy,
            "individual_recovery": "lossy",  # the checks below are the lossy protocol's
            "bootstrap_servers": "kafka:9092",  # as the containers reach it
            "checkpoint_interval": 0.4,
            "metrics_interval": 0.5,
            "params": {
                **inputs,
                "out": out,
                "parallelism": str(JOIN_PARALLELISM),
                "sinks": str(JOIN_PARALLELISM),  # chained with the join: one task each
                "delivery": "exactly_once",
            },
        },
    )
    try:
        before = stack.wait_for(job_id, all_running, "all tasks running", timeout=90)
        workers = {t["worker"] for t in before["tasks"]}
        assert len(workers) == 2, f"the job is spread over both workers: {workers}"
        feeder = threading.Thread(target=feed, args=(stack.bootstrap, inputs, events), daemon=True)
        feeder.start()
        stack.wait_for(job_id, lambda s: s["checkpoints"]["completed"] >= 3, "3 checkpoints")

        stack.docker("kill", victim)  # SIGKILL: the worker and its task processes
        failed = sorted(t["task"] for t in before["tasks"] if t["host"] == "worker2")
        lost_worker = next(t["worker"] for t in before["tasks"] if t["host"] == "worker2")

        def recovered(s: Status) -> bool:
            records = s["failovers"]
            return (
                bool(records)
                and all(r["status"] in {"done", "superseded"} for r in records)
                and records[-1]["status"] == "done"
                and all_running(s)
                and all(t["worker"] != lost_worker for t in s["tasks"])
            )

        status = stack.wait_for(job_id, recovered, f"recovery from losing {failed}")
        assert {t["worker"] for t in status["tasks"]} == workers - {lost_worker}
        assert all("lost" in r["cause"] for r in status["failovers"]), status["failovers"]
        feeder.join(timeout=90)
        assert not feeder.is_alive()

        if strategy == "individual":
            done = stack.status(job_id)["checkpoints"]["completed"]
            stack.wait_for(
                job_id, lambda s: s["checkpoints"]["completed"] >= done + 3, "final commits"
            )
            records = read_topic(stack.bootstrap, out, timeout=90, idle=3.0)
        else:
            records = read_topic(stack.bootstrap, out, expected=len(oracle), timeout=120, idle=3.0)
        ids = Counter(orjson.loads(r.value)["order_id"] for r in records)  # type: ignore[arg-type]
        assert set(ids) <= oracle, "nothing outside the oracle"
        if strategy == "individual":
            check_individual(status, failed, oracle, ids)
        else:
            assert max(ids.values()) == 1, "no order is emitted twice"
            assert set(ids) == oracle, f"{len(oracle - set(ids))} orders missing"
            assert status["checkpoints"]["restored_from"] is not None
    finally:
        with contextlib.suppress(Exception):
            stack.client.cancel(job_id)
        stack.docker("start", victim)
        deadline = time.monotonic() + 60
        while len(stack.workers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)


def check_individual(
    status: Status, failed: list[str], oracle: set[str], ids: Counter[str]
) -> None:
    """Only the failed tasks restarted, each on its own; loss and duplicates only where
    a failed task could cause them (see the module docstring)."""
    assert {r["task"] for r in status["failovers"]} == set(failed), status["failovers"]
    for record in status["failovers"]:
        assert record["tasks_restarted"] == [record["task"]], record
    attempts = {t["task"]: t["attempt"] for t in status["tasks"]}
    assert {t for t, a in attempts.items() if a > 0} == set(failed), attempts
    failed_joins = {int(t.split("#")[1]) for t in failed if t.startswith("join#")}
    replayed = {  # partitions that a restarted source read again from its checkpoint
        (topic, p)
        for t in failed
        if (topic := t.split("#")[0]) in TOPICS
        for p in range(PARTITIONS)
        if p % 2 == int(t.split("#")[1])
    }

    def touched_by_a_source(oid: str) -> bool:
        return any((topic, partition_of(oid)) in replayed for topic in TOPICS)

    def in_failed_key_groups(oid: str) -> bool:
        return subtask_for_key(oid, 128, JOIN_PARALLELISM) in failed_joins

    untouched = {oid for oid in oracle if not touched_by_a_source(oid)}
    exact = {oid for oid in untouched if not in_failed_key_groups(oid)}
    assert exact, f"the kill of {failed} left no order to check exactly"
    missing = oracle - set(ids)
    assert not (missing & exact), f"{len(missing & exact)} orders lost outside the failed tasks"
    duplicated = {oid for oid, n in ids.items() if n > 1}
    assert not (duplicated & untouched), f"duplicates not from a replaying source: {duplicated}"
    print(
        f"individual: failed {failed}; {len(exact)} of {len(oracle)} orders outside the failed "
        f"tasks all exact; {len(missing)} missing and {len(duplicated)} duplicated inside them"
    )
