"""librdkafka settings a job gives (``kafka_config``): checks, merging, and the CLI's file.

Every Kafka client the runtime makes (sources, sinks, transactional or not, the
dead-letter producer, an interval join's late-output producer, the CLI's admin
clients) gets its settings from ``client_config``, in this order, later winning:

1. streamer's defaults for every client (connection setup timeout, logging);
2. the component's own defaults (e.g. ``linger.ms``, ``fetch.wait.max.ms``), and the
   settings a caller passes in code (``consumer_config=`` / ``producer_config=``);
3. the job's ``kafka_config`` (checked by ``check_kafka_config``);
4. the settings streamer manages for that client (group ids, transactions, offsets).

A job's ``kafka_config`` may not name a key of `REFUSED` (it would let whoever
submits a job run code on, or take files and credentials from, the workers), nor
one of `MANAGED` (streamer sets it; changing it breaks recovery or delivery
guarantees). Either is a `ConfigError` naming the key and why.

Allowed on purpose: the TLS file paths (``ssl.ca.location``, ``ssl.key.location``,
``ssl.certificate.location``, ``ssl.keystore.location``, ``ssl.crl.location``,
``https.ca.location``: the worker reads them for its own handshakes and sends only a
certificate), OIDC with inline secrets (``sasl.oauthbearer.client.secret``, ``...pem``)
and ``enable.sasl.oauthbearer.unsecure.jwt`` (an unsigned token the broker decides
on), ``debug`` (librdkafka redacts passwords). Keys are matched exactly, as librdkafka
does (it knows no other spelling of them).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamer.errors import ConfigError

_CODE = "loads a shared library into the worker"
_EXFIL = "sends a file or the worker's own credentials to an endpoint the job chooses"

REFUSED: dict[str, str] = {
    "plugin.library.paths": _CODE + " (librdkafka plugins)",
    "ssl.engine.location": _CODE + " (an OpenSSL engine)",
    "ssl.engine.id": _CODE + " (selects an OpenSSL engine to load)",
    "ssl.providers": _CODE + " (OpenSSL 3 providers, by name or path)",
    "sasl.kerberos.kinit.cmd": "is a shell command the worker runs",
    "sasl.kerberos.principal": "goes into the kinit shell command the worker runs",
    "sasl.kerberos.keytab": "goes into the kinit shell command the worker runs",
    "internal.termination.signal": "installs a signal handler in the task process",
    "offset.store.path": "writes offset files at a path the job chooses",
    "offset.store.method": "can switch to offset files at a path the job chooses",
    "sasl.oauthbearer.assertion.file": _EXFIL,
    "sasl.oauthbearer.assertion.jwt.template.file": _EXFIL,
    "sasl.oauthbearer.assertion.private.key.file": "signs tokens for an endpoint the job "
    "chooses with a key file of the worker's",
    "sasl.oauthbearer.metadata.authentication.type": _EXFIL + " (cloud metadata identity)",
    "interceptors": "is set through librdkafka's C API, not a job setting",
    "opaque": "is set through librdkafka's C API, not a job setting",
    "default_topic_conf": "is set through librdkafka's C API, not a job setting",
    "ssl_engine_callback_data": "is set through librdkafka's C API, not a job setting",
    "logger": "is streamer's (librdkafka logs through Python logging)",
    "on_delivery": "is a Python callback streamer sets",
    "on_commit": "is a Python callback streamer sets",
}
"""Keys a job may never set, with why. Also refused: any key ending in ``_cb``
(callbacks: ``error_cb``, ``oauth_cb``, ``stats_cb``, ...), which librdkafka and the
Python client take only as code."""

MANAGED: dict[str, str] = {
    "bootstrap.servers": "use the job setting bootstrap_servers (--bootstrap-servers)",
    "metadata.broker.list": "use the job setting bootstrap_servers (--bootstrap-servers)",
    "group.id": "streamer names one group per source vertex and per sink's commit markers",
    "enable.auto.commit": "sources commit offsets only for completed checkpoints",
    "auto.commit.enable": "sources commit offsets only for completed checkpoints",
    "enable.auto.offset.store": "sources commit offsets only for completed checkpoints",
    "isolation.level": "sources read committed records only (exactly-once sinks)",
    "enable.partition.eof": "streamer's sources expect it off",
    "transactional.id": "each exactly-once sink subtask has its own, to fence old attempts",
    "transaction.timeout.ms": "set per sink (transaction_timeout_ms)",
    "enable.idempotence": "sinks need idempotence for their delivery guarantee",
    "acks": "sinks need acks=all for their delivery guarantee",
    "request.required.acks": "sinks need acks=all for their delivery guarantee",
}
"""Keys streamer sets itself where it needs them, with what to do instead."""

_SCALARS = (str, int, float, bool)


def refusal(key: str) -> str | None:
    """Why a job may not set ``key`` (None: it may)."""
    if key in REFUSED:
        return f"{key} {REFUSED[key]}"
    if key.endswith("_cb"):
        return f"{key} is a callback: librdkafka takes it only as code"
    if key in MANAGED:
        return f"{key} is managed by streamer: {MANAGED[key]}"
    return None


def check_kafka_config(config: Any, what: str = "kafka_config") -> dict[str, Any]:
    """``config`` as a dict of librdkafka settings a job may give, or a one-line
    `ConfigError` naming the first key that is refused or malformed."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"{what} must be a mapping of librdkafka settings, not {config!r}")
    out: dict[str, Any] = {}
    for key, value in config.items():
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise ConfigError(f"{what}: bad librdkafka key {key!r}")
        why = refusal(key)
        if why is not None:
            raise ConfigError(f"{what}: refused {why}")
        if value is None or not isinstance(value, _SCALARS):
            raise ConfigError(f"{what}: {key}={value!r} must be a string, a number or a boolean")
        out[key] = value
    return out


def client_config(
    bootstrap: str,
    *,
    defaults: Mapping[str, Any] | None = None,
    kafka_config: Mapping[str, Any] | None = None,
    managed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings of one Kafka client; see the module docstring for the order."""
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "socket.connection.setup.timeout.ms": 10000,
        "logger": logging.getLogger("streamer.kafka.client"),  # librdkafka logs via logging
        "log_level": 3,  # errors only: librdkafka warns on routine retries
    }
    config.update(defaults or {})
    config.update(check_kafka_config(kafka_config or {}))
    config.update(managed or {})
    config["bootstrap.servers"] = bootstrap
    return config


def parse_properties(text: str, source: str) -> dict[str, str]:
    """A Java-properties-style text: ``key=value`` lines (``key: value`` too), ``#``
    and ``!`` comments, blank lines. Values are strings, stripped. A line that is not
    a setting, or a key given twice, is a `ConfigError` naming ``source`` and the line."""
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        key = line[:cut].strip() if cut >= 0 else ""
        if not key:
            raise ConfigError(f"{source}:{number}: expected key=value, got {line!r}")
        if key in out:
            raise ConfigError(f"{source}:{number}: {key} is set twice")
        value = line[cut + 1 :].strip()
        if value.endswith("\\"):
            raise ConfigError(f"{source}:{number}: line continuations are not supported")
        out[key] = value
    return out


def read_properties(path: str | Path) -> dict[str, str]:
    """``parse_properties`` of a file, with a one-line error when it cannot be read."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"cannot read Kafka config file {path}: {reason}") from None
    return parse_properties(text, str(path))
