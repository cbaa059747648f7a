"""Kafka for tests: which broker to use, starting it, and unique throw-away topics.

Choice, in order (``choose_kafka_backend`` is the pure part, unit-tested):
``STREAMER_KAFKA_BOOTSTRAP`` if set (a broker someone else runs);
``STREAMER_KAFKA_BACKEND=local|container`` if set (``make test`` runs one part of the
suite on each); otherwise a Kafka container, started through testcontainers, when a
Docker engine answers a ping; otherwise ``LocalKafka`` (the broker jars from Maven
Central).

The container is a generic testcontainers container of a Kafka image configured by
``KAFKA_*`` variables, as the official ``apache/kafka`` image is: that image by
default, or ``STREAMER_KAFKA_IMAGE`` (e.g. ``streamer-kafka:4.1.1``, which ``make
images`` builds without any registry). testcontainers' own defaults that need a
registry or a real container host are set here, never by the user: the Ryuk reaper
is off (containers are removed by the fixture, even when a test fails), and with an
engine on this machine the broker is reached at 127.0.0.1 on its mapped port.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from streamer.localkafka.jars import kafka_version

log = logging.getLogger(__name__)

ENV_BOOTSTRAP = "STREAMER_KAFKA_BOOTSTRAP"
ENV_BACKEND = "STREAMER_KAFKA_BACKEND"  # local | container | auto (default)
ENV_IMAGE = "STREAMER_KAFKA_IMAGE"
# Set by make test when no engine can run here: the reason, for the skip messages.
ENV_DOCKER_UNAVAILABLE = "STREAMER_DOCKER_UNAVAILABLE"
KAFKA_VERSION = kafka_version()  # of streamer/localkafka/pom.xml: the same Kafka everywhere
OFFICIAL_IMAGE = f"apache/kafka:{KAFKA_VERSION}"
LOCAL_IMAGE = f"streamer-kafka:{KAFKA_VERSION}"  # built by `make images` (scripts/images.py)
DEFAULT_IMAGE = OFFICIAL_IMAGE
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"
CONTAINER_LABEL = "dev.streamer.test"


class KafkaBackend(Enum):
    ENV = "env"  # STREAMER_KAFKA_BOOTSTRAP names a broker someone else runs
    CONTAINER = "container"  # testcontainers, when a Docker engine answers
    LOCAL = "local"  # streamer.localkafka.LocalKafka


def choose_kafka_backend(env: Mapping[str, str], docker_ping: Callable[[], bool]) -> KafkaBackend:
    """Pure decision: the bootstrap env var wins; then ``STREAMER_KAFKA_BACKEND``; then
    Docker if it answers a ping; else local.

    ``docker_ping`` is only called when neither env var decides.
    """
    if env.get(ENV_BOOTSTRAP, "").strip():
        return KafkaBackend.ENV
    forced = env.get(ENV_BACKEND, "").strip().lower()
    if forced in {"local", "container"}:
        return KafkaBackend(forced)
    if forced not in {"", "auto"}:
        raise ValueError(f"{ENV_BACKEND}={forced!r}: use local, container or auto")
    return KafkaBackend.CONTAINER if docker_ping() else KafkaBackend.LOCAL


def _docker_sdk() -> Any:
    # imported by name: the project's own docker/ folder would shadow it for mypy
    return importlib.import_module("docker")


def docker_ping(timeout: float = 2.0, *, base_url: str | None = None) -> bool:
    """True when a Docker engine answers a ping (the ``docker`` CLI alone is not enough).

    ``base_url`` (e.g. ``unix:///run/x.sock``) asks that engine; default: ``DOCKER_HOST``
    or the default socket."""
    try:
        docker = _docker_sdk()
        client = (
            docker.DockerClient(base_url=base_url, timeout=timeout)
            if base_url
            else docker.from_env(timeout=timeout)
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no engine reachable"
        return False


def engine_answers(env: Mapping[str, str] | None = None) -> bool:
    """Whether this run may use a Docker engine: one answers a ping, and make test did not
    say none may be used (``STREAMER_DOCKER_UNAVAILABLE``, e.g. with ``STREAMER_DOCKER=off``)."""
    env = os.environ if env is None else env
    return not env.get(ENV_DOCKER_UNAVAILABLE, "").strip() and docker_ping()


def no_engine_reason(env: Mapping[str, str]) -> str:
    """Why the container tests did not run: make test's reason, or the ping's."""
    given = env.get(ENV_DOCKER_UNAVAILABLE, "").strip()
    if given:
        return f"NOT RUN: {given}"
    where = env.get("DOCKER_HOST", "").strip() or DEFAULT_DOCKER_HOST
    return (
        f"NOT RUN: no Docker engine answers a ping at {where} (make test installs and "
        "starts one where it can: as root on Debian or Ubuntu)"
    )


def choose_kafka_image(env: Mapping[str, str], present: Callable[[str], bool]) -> str:
    """Pure decision: ``STREAMER_KAFKA_IMAGE`` if set; else the official image when it is
    here, else the locally built one when that is here, else the official one (pulled)."""
    given = env.get(ENV_IMAGE, "").strip()
    if given:
        return given
    if present(OFFICIAL_IMAGE):
        return OFFICIAL_IMAGE
    return LOCAL_IMAGE if present(LOCAL_IMAGE) else OFFICIAL_IMAGE


def engine_is_local(env: Mapping[str, str], bridge_here: bool) -> bool:
    """Whether the engine runs in this machine's network namespace, so a container's
    published port is reached at 127.0.0.1: its socket is a local unix socket and its
    bridge (``docker0``) is one of this machine's interfaces."""
    host = env.get("DOCKER_HOST", "").strip() or DEFAULT_DOCKER_HOST
    return host.startswith("unix://") and bridge_here


def testcontainers_settings(env: Mapping[str, str], *, engine_local: bool) -> dict[str, str]:
    """testcontainers settings the project makes, unless the user set them.

    - ``ryuk_disabled``: its reaper image comes from a registry; the fixtures remove
      their containers themselves.
    - ``connection_mode=docker_host`` and ``host=127.0.0.1`` for an engine on this
      machine: where ``/.dockerenv`` exists (a VM built from a container image),
      testcontainers would otherwise reach containers through a bridge gateway
      address, while ports are published on 127.0.0.1.
    """
    out: dict[str, str] = {}
    if not env.get("TESTCONTAINERS_RYUK_DISABLED", "").strip():
        out["ryuk_disabled"] = "true"
    if engine_local and not env.get("TESTCONTAINERS_CONNECTION_MODE", "").strip():
        out["connection_mode"] = "docker_host"
    if engine_local and not (env.get("TESTCONTAINERS_HOST_OVERRIDE") or env.get("TC_HOST")):
        out["host"] = "127.0.0.1"
    return out


def configure_testcontainers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Apply ``testcontainers_settings`` to testcontainers' configuration; returns them."""
    from testcontainers.core.config import ConnectionMode
    from testcontainers.core.config import testcontainers_config as config

    env = os.environ if env is None else env
    settings = testcontainers_settings(
        env, engine_local=engine_is_local(env, Path("/sys/class/net/docker0").exists())
    )
    if "ryuk_disabled" in settings:
        config.ryuk_disabled = True
    if "connection_mode" in settings:
        config.connection_mode_override = ConnectionMode(settings["connection_mode"])
    if "host" in settings:
        config.tc_host_override = settings["host"]
    return settings


def image_present(image: str) -> bool:
    """Whether the engine (``DOCKER_HOST``) has ``image`` without pulling it."""
    docker = _docker_sdk()
    client = docker.from_env(timeout=10)
    try:
        client.images.get(image)
        return True
    except docker.errors.ImageNotFound:
        return False
    finally:
        client.close()


def kafka_container_env(cluster_id: str) -> dict[str, str]:
    """A single KRaft node (broker and controller) configured like ``LocalKafka``.

    Three listeners: PLAINTEXT on 9092 for clients (advertised at the mapped port,
    set once the container runs), BROKER on 9093 inside the container, CONTROLLER
    on 9094."""
    return {
        "CLUSTER_ID": cluster_id,
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": (
            "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT"
        ),
        "KAFKA_INTER_BROKER_LISTENER_NAME": "BROKER",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9094",
        "KAFKA_LOG_DIRS": "/tmp/kraft-combined-logs",
        "KAFKA_NUM_PARTITIONS": "1",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS": "8",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_NUM_PARTITIONS": "8",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        "KAFKA_HEAP_OPTS": "-Xmx768m -Xms256m",
    }


_ADVERTISED = "/tmp/streamer-advertised.env"
# The broker may only start once it knows the port the engine mapped 9092 to: the
# container waits for a file that the fixture writes after start, then runs the
# image's own entry point (the official image's and ours: /etc/kafka/docker/run).
_WAIT_THEN_RUN = (
    f"while [ ! -f {_ADVERTISED} ]; do sleep 0.1; done; . {_ADVERTISED}; exec /etc/kafka/docker/run"
)
STARTED_LOG = "Kafka Server started"


@dataclass(frozen=True)
class TestBroker:
    """The broker a test session uses and how it was started, for the run's report."""

    backend: KafkaBackend
    bootstrap: str
    detail: str = ""


@contextlib.contextmanager
def kafka_container(
    image: str | None = None, *, startup_timeout: float = 120.0
) -> Iterator[TestBroker]:
    """A single-node KRaft Kafka container (testcontainers); removed on exit, also
    when the block raises."""
    configure_testcontainers()
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    chosen = image or choose_kafka_image(os.environ, image_present)
    if not image_present(chosen):
        _pull(chosen)
    container = (
        DockerContainer(chosen)
        .with_envs(**kafka_container_env(_cluster_id()))
        .with_exposed_ports(9092)
        .with_command(["bash", "-c", _WAIT_THEN_RUN])
        .with_kwargs(labels={CONTAINER_LABEL: "kafka"})
    )
    started = time.monotonic()
    with container:
        host = container.get_container_host_ip()
        host = "127.0.0.1" if host == "localhost" else host
        port = container.get_exposed_port(9092)
        advertised = f"PLAINTEXT://{host}:{port},BROKER://localhost:9093"
        result = container.exec(
            ["bash", "-c", f"echo 'export KAFKA_ADVERTISED_LISTENERS={advertised}' "
             f"> {_ADVERTISED}.tmp && mv {_ADVERTISED}.tmp {_ADVERTISED}"]
        )  # fmt: skip
        if result.exit_code != 0:
            raise RuntimeError(f"could not configure the Kafka container: {result.output!r}")
        LogMessageWaitStrategy(STARTED_LOG).with_startup_timeout(
            int(startup_timeout)
        ).wait_until_ready(container)
        bootstrap = f"{host}:{port}"
        _wait_for_metadata(bootstrap, deadline=started + startup_timeout)
        cid = container.get_container_id()[:12]
        took = time.monotonic() - started
        yield TestBroker(
            KafkaBackend.CONTAINER,
            bootstrap,
            f"image {chosen}, container {cid} started by testcontainers in {took:.1f} s, "
            f"engine {os.environ.get('DOCKER_HOST') or DEFAULT_DOCKER_HOST}",
        )


def _cluster_id() -> str:
    from streamer.localkafka.broker import new_cluster_id

    return new_cluster_id()


def _pull(image: str) -> None:
    docker = _docker_sdk()
    client = docker.from_env(timeout=120)
    try:
        client.images.pull(image)
    except Exception as exc:  # noqa: BLE001 - one clear line instead
        raise RuntimeError(
            f"the Kafka image {image} is not on this Docker engine and could not be pulled "
            f"({str(exc).splitlines()[0][:200]}); without an image registry, build it with "
            f"`make images` ({LOCAL_IMAGE}), or name another with {ENV_IMAGE}"
        ) from None
    finally:
        client.close()


def _wait_for_metadata(bootstrap: str, deadline: float) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    while True:
        try:
            if admin.list_topics(timeout=1.0).brokers:
                return
        except Exception:  # noqa: BLE001 - not up yet; keep polling until the deadline
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"the Kafka container at {bootstrap} did not answer in time")
        time.sleep(0.2)


@contextlib.contextmanager
def container_kafka(image: str | None = None) -> Iterator[str]:
    """A single-node KRaft Kafka in a container via testcontainers; yields bootstrap servers."""
    with kafka_container(image) as broker:
        yield broker.bootstrap


@contextlib.contextmanager
def start_test_broker(backend: KafkaBackend) -> Iterator[TestBroker]:
    """Start (or find) the broker for ``backend``; yields it, stops it after."""
    if backend is KafkaBackend.ENV:
        yield TestBroker(backend, os.environ[ENV_BOOTSTRAP].strip(), f"from {ENV_BOOTSTRAP}")
    elif backend is KafkaBackend.CONTAINER:
        with kafka_container() as broker:
            yield broker
    else:
        from streamer.localkafka import LocalKafka

        with LocalKafka(quiet=True) as local:
            yield TestBroker(
                backend,
                local.bootstrap_servers,
                f"Apache Kafka {kafka_version()} from the Maven-resolved jars, pid "
                f"{local.proc.pid if local.proc else '?'}",
            )


@contextlib.contextmanager
def kafka_for_tests(backend: KafkaBackend) -> Iterator[str]:
    """Start (or find) the broker for ``backend``; yields bootstrap servers, stops it after."""
    with start_test_broker(backend) as broker:
        yield broker.bootstrap


class TopicFactory:
    """Creates uniquely named topics and deletes them all on ``cleanup()``.

    Usable outside pytest: ``with TopicFactory(bootstrap) as topics: name = topics.create(4)``.
    ``client_config``: librdkafka settings for a secured cluster (as a job's ``kafka_config``).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        prefix: str = "t",
        client_config: dict[str, Any] | None = None,
    ) -> None:
        from confluent_kafka.admin import AdminClient

        self.bootstrap_servers = bootstrap_servers
        self.prefix = prefix
        self.admin = AdminClient({**(client_config or {}), "bootstrap.servers": bootstrap_servers})
        self.created: list[str] = []

    def create(
        self, partitions: int = 1, *, name: str | None = None, config: dict[str, str] | None = None
    ) -> str:
        """Create a topic with ``partitions`` partitions and wait until its metadata is visible."""
        from confluent_kafka.cimpl import NewTopic

        topic = name or f"{self.prefix}-{uuid.uuid4().hex[:12]}"
        futures = self.admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=config or {})]
        )
        futures[topic].result(timeout=30)
        self.created.append(topic)
        self._wait_for(topic, partitions)
        return topic

    def add_partitions(self, topic: str, total: int) -> None:
        """Grow ``topic`` to ``total`` partitions (a partition that appears later)."""
        from confluent_kafka.cimpl import NewPartitions

        self.admin.create_partitions([NewPartitions(topic, total)])[topic].result(timeout=30)
        self._wait_for(topic, total)

    def _wait_for(self, topic: str, partitions: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            meta = self.admin.list_topics(topic=topic, timeout=5).topics.get(topic)
            if meta is not None and meta.error is None and len(meta.partitions) == partitions:
                return
            time.sleep(0.05)
        raise TimeoutError(f"topic {topic} did not show {partitions} partitions in {timeout} s")

    def cleanup(self) -> None:
        if not self.created:
            return
        futures = self.admin.delete_topics(self.created, operation_timeout=30)
        for topic, fut in futures.items():
            try:
                fut.result(timeout=30)
            except Exception as exc:  # noqa: BLE001 - best effort; report and go on
                log.warning("could not delete test topic %s: %s", topic, exc)
        self.created.clear()

    def __enter__(self) -> TopicFactory:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


def produce_records(
    bootstrap_servers: str,
    topic: str,
    records: list[tuple[Any, Any]] | list[tuple[Any, Any, int]],
    *,
    raw: bool = False,
    client_config: dict[str, Any] | None = None,
) -> None:
    """Write ``(key, value)`` or ``(key, value, partition)`` tuples and wait until stored.

    Keys are str-encoded and values orjson-encoded unless ``raw`` (then both are bytes).
    ``client_config``: librdkafka settings for a secured cluster.
    """
    import orjson
    from confluent_kafka import Producer

    producer = Producer(
        {**(client_config or {}), "bootstrap.servers": bootstrap_servers, "linger.ms": 5}
    )
    errors: list[str] = []

    def done(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err.str())

    for rec in records:
        key, value = rec[0], rec[1]
        kwargs: dict[str, Any] = {"on_delivery": done}
        if len(rec) > 2:
            kwargs["partition"] = rec[2]
        if not raw:
            key = None if key is None else str(key).encode()
            value = orjson.dumps(value)
        while True:
            try:
                producer.produce(topic, key=key, value=value, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(60)
    if left or errors:
        raise RuntimeError(f"produce to {topic} failed: {errors[:3] or f'{left} unsent'}")


@dataclass(frozen=True)
class ReadRecord:
    key: bytes | None
    value: bytes | None
    partition: int
    offset: int
    headers: dict[str, bytes]


def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    expected: int | None = None,
    read_committed: bool = True,
    timeout: float = 30.0,
    idle: float = 1.0,
    client_config: dict[str, Any] | None = None,
) -> list[ReadRecord]:
    """Every record of ``topic`` from the beginning, raw, in (partition, offset) order.

    Stops when ``expected`` records were read (and ``idle`` more seconds brought no
    extra record), or, without ``expected``, after ``idle`` seconds with nothing new.
    Raises ``TimeoutError`` when ``expected`` is not reached within ``timeout``.
    ``client_config``: librdkafka settings for a secured cluster.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer: Any = Consumer(
        {
            **(client_config or {}),
            "bootstrap.servers": bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    try:
        meta = consumer.list_topics(topic=topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, -2) for p in meta.partitions])
        out: list[ReadRecord] = []
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=1000, timeout=0.2)
            for msg in batch:
                if msg.error() is None:
                    headers = dict(msg.headers() or [])
                    out.append(
                        ReadRecord(msg.key(), msg.value(), msg.partition(), msg.offset(), headers)
                    )
            if batch:
                last_new = time.monotonic()
            enough = expected is None or len(out) >= expected
            if enough and time.monotonic() - last_new >= idle:
                break
        else:
            if expected is not None and len(out) < expected:
                raise TimeoutError(
                    f"read {len(out)} of {expected} records from {topic} in {timeout} s"
                )
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        consumer.close()
