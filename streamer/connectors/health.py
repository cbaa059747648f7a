"""Whether a Kafka client can reach its brokers, and since when: ``KafkaHealth``.

A source or sink gives its librdkafka client ``KafkaHealth.callbacks()``:

- ``error_cb``: ``_ALL_BROKERS_DOWN`` marks the client unreachable (from then on);
  every error is kept as ``last_error`` and logged at WARNING, each distinct text
  (digits aside) at most once per ``LOG_EVERY`` seconds, so a broker that refuses
  every 100 ms reconnect does not flood the task's log;
- ``stats_cb`` (every ``STATS_INTERVAL_MS``): a broker in state ``UP`` marks it
  reachable again. Being down starts only from an error, never from statistics
  alone, so a client that holds no connection while idle is not called down.

Callbacks run where librdkafka serves them (the thread that polls the client);
``snapshot()`` may be called from any thread. A producer serves its callbacks
only when polled: ``watch(producer)`` lets ``snapshot()`` poll it first (call
``snapshot`` on the producer's own thread then).

Every live ``KafkaHealth`` of this process is in ``all_health()``: a task process
runs one task, so that is the task's view of Kafka (the task metrics read it).

``probe(bootstrap)`` asks a broker for metadata and fails fast: a refused
connection or an unknown host is reported as soon as librdkafka sees every broker
down (well under a second), a failed authentication or TLS handshake as soon as
librdkafka reports it, a silent broker after ``timeout``. It and
``kafka_common.connect_error`` (why a job's client could not connect) are the one
probe, `reach`.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from streamer.errors import ConnectorError

log = logging.getLogger(__name__)

STATS_INTERVAL_MS = 1000
LOG_EVERY = 30.0
UNREACHABLE = "cannot reach Kafka"
"""Every message about an unreachable Kafka says this (the coordinator looks for it)."""

_registry: weakref.WeakSet[KafkaHealth] = weakref.WeakSet()
_registry_lock = threading.Lock()


def all_health() -> list[KafkaHealth]:
    """Every live ``KafkaHealth`` of this process, in creation order."""
    with _registry_lock:
        return sorted(_registry, key=lambda h: h.created)


def clean_error(text: str) -> str:
    """librdkafka's error text without the ``host:port/id: `` prefix and the
    ``(after 0ms in state CONNECT, ...)`` suffix."""
    text = re.sub(r"^\S+/(?:bootstrap|\d+): ", "", text.strip())
    return re.sub(r"\s*\(after \d+ms in state [A-Z_]+.*\)$", "", text)


class KafkaHealth:
    """Reachability of one librdkafka client; see the module docstring."""

    def __init__(self, role: str, bootstrap: str, *, clock: Callable[[], float] = time.time):
        self.role = role
        self.bootstrap = bootstrap
        self.clock = clock
        self.created = time.monotonic()
        self.unreachable_since: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.errors = 0
        self._client: Any = None
        self._lock = threading.Lock()
        self._logged: dict[str, float] = {}
        with _registry_lock:
            _registry.add(self)

    def callbacks(self) -> dict[str, Any]:
        """librdkafka settings to add to the client's config."""
        return {
            "error_cb": self.error_cb,
            "stats_cb": self.stats_cb,
            "statistics.interval.ms": STATS_INTERVAL_MS,
        }

    def watch(self, producer: Any) -> None:
        """``snapshot()`` polls ``producer`` (0 s) so that its callbacks are current."""
        self._client = producer

    def error_cb(self, err: Any) -> None:
        from confluent_kafka import KafkaError

        now = self.clock()
        text = clean_error(err.str())
        with self._lock:
            self.errors += 1
            if err.code() == KafkaError._ALL_BROKERS_DOWN:
                if self.unreachable_since is None:
                    self.unreachable_since = now
                    log.warning("%s %s at %s: all brokers are down", self.role, UNREACHABLE,
                                self.bootstrap)  # fmt: skip
                return
            self.last_error, self.last_error_at = text, now
            key = re.sub(r"\d+", "0", text)
            if now - self._logged.get(key, -LOG_EVERY) < LOG_EVERY:
                return
            self._logged[key] = now
        log.warning("%s: Kafka error at %s: %s", self.role, self.bootstrap, text)

    def stats_cb(self, stats: str) -> None:
        try:
            brokers = orjson.loads(stats).get("brokers", {})
        except orjson.JSONDecodeError:
            return
        if any(b.get("state") == "UP" for b in brokers.values()):
            with self._lock:
                down, self.unreachable_since = self.unreachable_since, None
            if down is not None:
                log.warning("%s reaches Kafka at %s again after %.1f s", self.role,
                            self.bootstrap, self.clock() - down)  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """``{"role", "bootstrap", "reachable", "unreachable_since", "unreachable_s",
        "last_error", "last_error_at", "errors"}`` (times: epoch seconds)."""
        if self._client is not None:
            try:
                self._client.poll(0)
            except RuntimeError:  # closed meanwhile
                self._client = None
        now = self.clock()
        with self._lock:
            since = self.unreachable_since
            return {
                "role": self.role,
                "bootstrap": self.bootstrap,
                "reachable": since is None,
                "unreachable_since": since,
                "unreachable_s": None if since is None else round(max(0.0, now - since), 1),
                "last_error": self.last_error,
                "last_error_at": self.last_error_at,
                "errors": self.errors,
            }


HINT = "check that the broker runs and the bootstrap servers are right"
SECURITY_HINT = "check the job's kafka_config (security.protocol, sasl.*, ssl.*)"


@dataclass(frozen=True)
class Reach:
    """What `reach` found: ``metadata`` when a broker answered, else why it did not."""

    metadata: Any = None
    """The cluster metadata (``AdminClient.list_topics``), or None."""
    security: str | None = None
    """A failed authentication or TLS handshake, as librdkafka tells it (cleaned)."""
    down: str | None = None
    """Why every broker is down (refused, unknown host), when that was the end."""


def reach(bootstrap: str, config: Mapping[str, Any], timeout: float) -> Reach:
    """Ask a short-lived admin client with ``config``'s settings for ``bootstrap``'s metadata.

    The one Kafka probe (`probe`, and a failed client's `kafka_common.connect_error`):
    it asks in 0.25 s steps and ends at the first answer, at the first security error
    (an authentication or TLS failure, or an error that names ``security.protocol``),
    when every broker is down with a cause (refused, unresolvable), or after
    ``timeout`` seconds. librdkafka tells why only to an error callback, so the probe
    keeps ``config``'s connection settings and drops its callbacks, callables, logger
    and the keys streamer manages. Raises what ``AdminClient`` raises for bad settings.
    """
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient

    from streamer.connectors.client_config import MANAGED

    auth = (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED)
    skip = {"logger", "log_level", "statistics.interval.ms", *MANAGED}
    errors: list[Any] = []
    settings: dict[str, Any] = {
        k: v
        for k, v in config.items()
        if k not in skip and not k.endswith("_cb") and not callable(v)  # (on_delivery)
    }
    settings.update({"bootstrap.servers": bootstrap, "log_level": 0, "error_cb": errors.append})
    admin = AdminClient(settings)
    deadline = time.monotonic() + timeout
    while True:
        try:
            step = min(0.25, max(0.01, deadline - time.monotonic()))
            return Reach(metadata=admin.list_topics(timeout=step))
        except KafkaException:
            admin.poll(0)  # serves the error callback
        causes = [e for e in errors if e.code() != KafkaError._ALL_BROKERS_DOWN]
        security = [e for e in causes if e.code() in auth or "security.protocol" in e.str()]
        if security:
            return Reach(security=clean_error(security[0].str()))
        if causes and any(e.code() == KafkaError._ALL_BROKERS_DOWN for e in errors):
            return Reach(down=clean_error(causes[-1].str()))
        if time.monotonic() >= deadline:
            return Reach()


def probe(
    bootstrap: str,
    timeout: float = 15.0,
    config: Mapping[str, Any] | None = None,
    hint: str = HINT,
    security_hint: str = SECURITY_HINT,
) -> Any:
    """Cluster metadata from ``bootstrap`` (`reach`), or ``ConnectorError`` with one line
    ending in ``hint``: at once when every broker refuses or cannot be resolved, after
    ``timeout`` seconds when none answers. A failed authentication or TLS handshake (at
    once too) ends in ``security_hint``."""
    found = reach(bootstrap, config or {}, timeout)
    if found.metadata is not None:
        return found.metadata
    if found.security is not None:
        raise ConnectorError(f"{UNREACHABLE} at {bootstrap} ({found.security}): {security_hint}")
    if found.down is not None:
        raise ConnectorError(f"{UNREACHABLE} at {bootstrap} ({found.down}): {hint}")
    raise ConnectorError(f"{UNREACHABLE} at {bootstrap}: no answer within {timeout:.0f} s; {hint}")
