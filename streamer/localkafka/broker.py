"""A single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1.

``LocalKafka`` formats KRaft storage, starts ``kafka.Kafka`` from the jars that
``jars.resolve_kafka_jars`` cached, waits until the broker answers an AdminClient
call, and on ``stop()`` kills only the pid it started and removes its data
(unless ``keep_data``). Used by ``streamer kafka start|stop|status``, the pytest
fixture and the demo. Not thread-safe: one owner per instance.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from streamer.errors import LocalKafkaError
from streamer.localkafka.jars import LOG4J2_CONFIG, require_java, resolve_kafka_jars, streamer_home
from streamer.localkafka.secured import SaslSslListener, prepare_sasl_ssl

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require_free(port: int, what: str) -> None:
    """Raise unless Kafka could listen on ``port``. Like Kafka's acceptor, the probe
    sets ``SO_REUSEADDR``, so connections of a broker just stopped (TIME_WAIT) do
    not count as the port being taken; a listening socket still does."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise LocalKafkaError(
                f"{what} port {port} on 127.0.0.1 is taken: stop what uses it or choose "
                "another port"
            ) from None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _tail(path: Path, lines: int = 12) -> str:
    """The last ``lines`` lines of a log, without Java stack frames."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    kept = [ln for ln in text if not ln.lstrip().startswith(("at ", "..."))]
    return "\n".join(kept[-lines:])


def broker_properties(
    port: int, controller_port: int, log_dir: Path, sasl_ssl_port: int | None = None
) -> dict[str, str]:
    """Settings for a single node: replication factor 1 everywhere, no rebalance delay.
    With ``sasl_ssl_port``, a SASL_SSL listener there too (its TLS and SCRAM settings
    come from ``SaslSslListener.broker_properties``); brokers talk PLAINTEXT."""
    plain = f"PLAINTEXT://127.0.0.1:{port}"
    secured = "" if sasl_ssl_port is None else f",SASL_SSL://127.0.0.1:{sasl_ssl_port}"
    protocols = "" if sasl_ssl_port is None else ",SASL_SSL:SASL_SSL"
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"{plain}{secured},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"{plain}{secured}",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": f"PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{protocols}",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.network.threads": "2",
        "num.io.threads": "4",
    }


@dataclass(frozen=True)
class BrokerInfo:
    """What ``streamer kafka status|stop`` needs to find a broker started earlier."""

    pid: int
    bootstrap_servers: str
    data_dir: str
    keep_data: bool
    started_at: float
    sasl_ssl_bootstrap: str | None = None  # the SASL_SSL listener, when started with one
    client_properties: str | None = None  # its client settings (for --kafka-config)


def state_file() -> Path:
    return streamer_home() / "run" / "kafka.json"


def new_cluster_id() -> str:
    """A random KRaft cluster id (a url-safe base64 UUID, as Kafka makes them). Never one
    that starts with "-", which the storage tool would take for an option (as Kafka's
    own ``Uuid.randomUuid`` avoids)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


JVM_PROFILES: dict[str, tuple[str, ...]] = {
    # quick to start and small: the C1 compiler only (tests start many brokers)
    "test": ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"),
    # the full tiered JIT: slower to warm up, about a third less CPU once warm (at 1,500
    # records/s in, the order join's broker used 0.43 cores against 0.63 with "test")
    "throughput": ("-XX:+UseSerialGC",),
}
"""JVM settings of the local broker by profile (`LocalKafka(profile=...)`)."""


class LocalKafka:
    """Start and stop one local broker. Use as a context manager or call start()/stop().

    ``profile``: a key of `JVM_PROFILES`; ``test`` (the default) for tests,
    ``throughput`` for benchmarks."""

    def __init__(
        self,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        data_dir: str | Path | None = None,
        keep_data: bool = False,
        start_timeout: float = 90.0,
        heap: str = "768m",
        die_with_parent: bool = True,
        quiet: bool = False,
        extra_properties: dict[str, str] | None = None,
        sasl_ssl: bool = False,
        sasl_ssl_port: int | None = None,
        scram_mechanism: str = "SCRAM-SHA-512",
        profile: str = "test",
    ) -> None:
        if profile not in JVM_PROFILES:
            raise LocalKafkaError(
                f"unknown broker profile {profile!r}: use one of {', '.join(JVM_PROFILES)}"
            )
        self.profile = profile
        self.port = port
        self.controller_port = controller_port
        self._given_data_dir = Path(data_dir) if data_dir else None
        self.keep_data = keep_data
        self.start_timeout = start_timeout
        self.heap = heap
        self.die_with_parent = die_with_parent
        self.quiet = quiet
        self.extra_properties = extra_properties or {}
        self.want_sasl_ssl = sasl_ssl or sasl_ssl_port is not None
        self.sasl_ssl_port = sasl_ssl_port
        self.scram_mechanism = scram_mechanism
        self.sasl_ssl: SaslSslListener | None = None  # set by start() when asked for
        self.proc: subprocess.Popen[bytes] | None = None
        self.data_dir: Path | None = None
        self.bootstrap_servers = ""

    # ------------------------------------------------------------------ start
    def start(self) -> str:
        """Start the broker and return its bootstrap address once it answers."""
        java = require_java()
        libs = resolve_kafka_jars(quiet=self.quiet)
        if self.port is not None:
            _require_free(self.port, "broker")
        if self.controller_port is not None:
            _require_free(self.controller_port, "controller")
        if self.sasl_ssl_port is not None:
            _require_free(self.sasl_ssl_port, "SASL_SSL")
        port = self.port if self.port is not None else free_port()
        cport = self.controller_port if self.controller_port is not None else free_port()
        sport = None
        if self.want_sasl_ssl:
            sport = self.sasl_ssl_port if self.sasl_ssl_port is not None else free_port()
        if self._given_data_dir is not None:
            self._given_data_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir = self._given_data_dir
        else:
            base = streamer_home() / "run"
            base.mkdir(parents=True, exist_ok=True)
            self.data_dir = Path(tempfile.mkdtemp(prefix="kafka-", dir=base))
        props = broker_properties(port, cport, self.data_dir / "logs", sport)
        if sport is not None:
            self.sasl_ssl = prepare_sasl_ssl(
                self.data_dir / "sasl-ssl", "127.0.0.1", sport, self.scram_mechanism
            )
            props |= self.sasl_ssl.broker_properties(sport)
        props |= self.extra_properties
        config = self.data_dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        classpath = f"{libs}/*"
        jvm = [
            java, f"-Xmx{self.heap}", "-Xms128m", *JVM_PROFILES[self.profile],
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
            "-cp", classpath,
        ]  # fmt: skip
        if not (self.data_dir / "logs" / "meta.properties").exists():
            self._format(jvm, config)  # a kept data directory is reused as it is
        out = open(self.data_dir / "kafka.out", "wb")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                *jvm,
                f"-Dstreamer.log.file={self.data_dir / 'server.log'}",
                "kafka.Kafka",
                str(config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        out.close()
        self.bootstrap_servers = f"127.0.0.1:{port}"
        try:
            self._wait_ready()
        except BaseException:
            self.stop(keep_data=True)
            raise
        log.info("local Kafka broker pid %d at %s", self.proc.pid, self.bootstrap_servers)
        return self.bootstrap_servers

    def _format(self, jvm: list[str], config: Path) -> None:
        assert self.data_dir is not None
        cid = new_cluster_id()
        scram = [] if self.sasl_ssl is None else ["--add-scram", self.sasl_ssl.scram_argument()]
        proc = subprocess.run(
            [*jvm, f"-Dstreamer.log.file={self.data_dir / 'format.log'}",
             "kafka.tools.StorageTool", "format", "-t", cid, "-c", str(config), *scram],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            causes = [ln for ln in lines if "Exception" in ln or "Error" in ln] or lines
            detail = causes[0] if causes else f"exit code {proc.returncode}"
            raise LocalKafkaError(f"formatting KRaft storage failed: {detail[:300]}")

    def _wait_ready(self) -> None:
        """Until the broker answers on its plaintext listener, then on the SASL_SSL one
        (which proves the certificates and the SCRAM user too)."""
        assert self.data_dir is not None
        deadline = time.monotonic() + self.start_timeout
        self._wait_answers({}, self.bootstrap_servers, deadline)
        if self.sasl_ssl is not None:
            listener = self.sasl_ssl
            self._wait_answers(listener.client_config(), listener.bootstrap_servers, deadline)

    def _wait_answers(self, config: dict[str, str], bootstrap: str, deadline: float) -> None:
        from confluent_kafka.admin import AdminClient

        assert self.proc is not None and self.data_dir is not None
        admin = AdminClient({**config, "bootstrap.servers": bootstrap, "log_level": 0})
        while True:
            code = self.proc.poll()
            if code is not None:
                raise LocalKafkaError(
                    f"the Kafka broker exited with code {code} while starting; last lines of "
                    f"its log ({self.data_dir}):\n{_tail(self.data_dir / 'server.log')}\n"
                    f"{_tail(self.data_dir / 'kafka.out', 5)}"
                )
            try:
                if admin.list_topics(timeout=1.0).brokers:
                    return
            except Exception:  # noqa: BLE001 - not up yet; keep polling until the deadline
                pass
            if time.monotonic() > deadline:
                raise LocalKafkaError(
                    f"the Kafka broker did not answer within {self.start_timeout:.0f} s "
                    f"at {bootstrap}; see {self.data_dir / 'server.log'}"
                )
            time.sleep(0.2)

    # ------------------------------------------------------------------- stop
    def stop(self, *, keep_data: bool | None = None) -> None:
        """Kill the broker this instance started (only that pid) and remove its data."""
        keep = self.keep_data if keep_data is None else keep_data
        if self.proc is not None:
            stop_pid(self.proc.pid, self.proc)
            self.proc = None
        if self.data_dir is not None and not keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def info(self) -> BrokerInfo:
        assert self.proc is not None and self.data_dir is not None
        return BrokerInfo(
            pid=self.proc.pid,
            bootstrap_servers=self.bootstrap_servers,
            data_dir=str(self.data_dir),
            keep_data=self.keep_data,
            started_at=time.time(),
            sasl_ssl_bootstrap=None if self.sasl_ssl is None else self.sasl_ssl.bootstrap_servers,
            client_properties=None
            if self.sasl_ssl is None
            else str(Path(self.sasl_ssl.ca_location).with_name("client.properties")),
        )

    def __enter__(self) -> LocalKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def stop_pid(pid: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15.0) -> None:
    """SIGTERM ``pid``, then SIGKILL after ``timeout``; reap it when it is our child."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not pid_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=10)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); treat it as gone
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def is_our_broker(info: BrokerInfo) -> bool:
    """True when ``info.pid`` is still the broker we started (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return "kafka.Kafka" in cmdline and info.data_dir in cmdline and pid_alive(info.pid)


def write_state(info: BrokerInfo) -> None:
    path = state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(info)))
    tmp.rename(path)


def read_state() -> BrokerInfo | None:
    try:
        return BrokerInfo(**json.loads(state_file().read_text()))
    except (OSError, ValueError, TypeError):
        return None


@contextlib.contextmanager
def broker_or_local(
    bootstrap: str | None, *, announce: bool = True, profile: str = "test"
) -> Iterator[str]:
    """Yield ``bootstrap`` if given; else start a ``LocalKafka`` (``profile``) for the
    block and yield its."""
    if bootstrap:
        yield bootstrap
        return
    if announce:
        print("starting a local Apache Kafka broker (the first run resolves its jars "
              "from Maven Central) ...", flush=True)  # fmt: skip
    started = time.monotonic()
    with LocalKafka(quiet=not announce, profile=profile) as kafka:
        if announce:
            took = time.monotonic() - started
            print(f"  Kafka at {kafka.bootstrap_servers} in {took:.1f} s", flush=True)
        yield kafka.bootstrap_servers
