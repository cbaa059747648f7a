"""A job's librdkafka settings (``kafka_config``): refused keys, the CLI's properties
file, and how they merge into every Kafka client streamer makes."""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from streamer.connectors.client_config import (
    MANAGED,
    REFUSED,
    check_kafka_config,
    client_config,
    parse_properties,
    read_properties,
)
from streamer.coordinator.commands import add_job_options, job_config
from streamer.coordinator.settings import validate_settings
from streamer.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

SASL = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "alice",
    "sasl.password": "s3cret",
    "ssl.ca.location": "/etc/kafka/ca.pem",
}


# ------------------------------------------------------------------ refusals
@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("plugin.library.paths", "loads a shared library into the worker (librdkafka plugins)"),
        ("ssl.engine.location", "loads a shared library into the worker (an OpenSSL engine)"),
        ("ssl.engine.id", "loads a shared library into the worker (selects an OpenSSL engine"),
        ("ssl.providers", "loads a shared library into the worker (OpenSSL 3 providers"),
        ("sasl.kerberos.kinit.cmd", "is a shell command the worker runs"),
        ("sasl.kerberos.principal", "goes into the kinit shell command the worker runs"),
        ("sasl.kerberos.keytab", "goes into the kinit shell command the worker runs"),
        ("internal.termination.signal", "installs a signal handler in the task process"),
        ("offset.store.path", "writes offset files at a path the job chooses"),
        ("sasl.oauthbearer.assertion.file", "sends a file or the worker's own credentials"),
        ("sasl.oauthbearer.metadata.authentication.type", "(cloud metadata identity)"),
        ("interceptors", "is set through librdkafka's C API, not a job setting"),
        ("opaque", "is set through librdkafka's C API, not a job setting"),
        ("logger", "is streamer's (librdkafka logs through Python logging)"),
        ("error_cb", "is a callback: librdkafka takes it only as code"),
        ("oauth_cb", "is a callback: librdkafka takes it only as code"),
        ("ssl.certificate.verify_cb", "is a callback: librdkafka takes it only as code"),
    ],
)
def test_dangerous_keys_are_refused_naming_the_key_and_why(key: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_kafka_config({**SASL, key: "/tmp/evil.so"})
    message = str(info.value)
    assert message.startswith(f"kafka_config: refused {key} ")
    assert why in message
    assert "\n" not in message


def test_the_refusal_message_is_exact() -> None:
    with pytest.raises(ConfigError) as info:
        validate_settings({"kafka_config": {"sasl.kerberos.kinit.cmd": "touch /tmp/x"}})
    assert str(info.value) == (
        "job setting kafka_config: refused sasl.kerberos.kinit.cmd is a shell command the "
        "worker runs"
    )


@pytest.mark.parametrize("key", sorted(MANAGED))
def test_streamer_managed_keys_are_refused_with_what_to_do(key: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"^kafka_config: refused {key} is managed by streamer: "
    ):
        check_kafka_config({key: "x"})


def test_every_refused_key_is_a_real_librdkafka_property_or_python_callback() -> None:
    """The lists name keys librdkafka (or the Python client) knows, not typos: a typo
    would leave the real key unrefused."""
    from confluent_kafka import Producer

    api_only = {"interceptors", "opaque", "default_topic_conf", "ssl_engine_callback_data"}
    python = {"logger", "on_delivery", "on_commit"}
    for key in sorted(set(REFUSED) - api_only - python):
        value = {
            "ssl.engine.id": "dynamic",
            "internal.termination.signal": "0",
            "offset.store.method": "broker",
            "sasl.oauthbearer.metadata.authentication.type": "none",
        }.get(key, "x")
        try:
            Producer({"bootstrap.servers": "127.0.0.1:1", key: value})
        except Exception as exc:  # noqa: BLE001 - only "no such property" is a failure here
            assert "No such configuration property" not in str(exc), key


def test_security_and_tuning_settings_pass() -> None:
    config = {**SASL, "linger.ms": 20, "enable.ssl.certificate.verification": True, "debug": ""}
    assert check_kafka_config(config) == config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (["security.protocol"], "kafka_config must be a mapping of librdkafka settings"),
        ({"linger.ms": None}, "kafka_config: linger.ms=None must be a string, a number or"),
        ({"linger.ms": [1]}, "kafka_config: linger.ms=[1] must be a string, a number or"),
        ({" linger.ms": 1}, "kafka_config: bad librdkafka key ' linger.ms'"),
    ],
)
def test_malformed_kafka_config_is_one_line(config: Any, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_kafka_config(config)
    assert str(info.value).startswith(message)


# -------------------------------------------------------------------- merging
def test_merge_order_defaults_then_job_then_managed() -> None:
    config = client_config(
        "b:9092",
        defaults={"linger.ms": 5, "fetch.wait.max.ms": 50},
        kafka_config={**SASL, "linger.ms": 50},
        managed={"group.id": "streamer-job-events", "enable.auto.commit": False},
    )
    assert config["bootstrap.servers"] == "b:9092"
    assert config["linger.ms"] == 50  # the job's setting beats a component default
    assert config["fetch.wait.max.ms"] == 50
    assert config["group.id"] == "streamer-job-events"
    assert {k: config[k] for k in SASL} == SASL
    assert isinstance(config["logger"], logging.Logger)
    assert config["socket.connection.setup.timeout.ms"] == 10000


def test_a_component_default_can_not_carry_a_refused_job_key_past_the_check() -> None:
    with pytest.raises(ConfigError, match=r"refused plugin\.library\.paths"):
        client_config("b:9092", kafka_config={"plugin.library.paths": "evil"})


# ------------------------------------------------------------ properties file
def test_properties_file_parsing() -> None:
    text = (
        "# a secured cluster\n"
        "! also a comment\n"
        "\n"
        "security.protocol=SASL_SSL\n"
        "  sasl.mechanism = SCRAM-SHA-512  \n"
        "sasl.username: alice\n"
        "sasl.password=pa=ss:word\n"
        "ssl.ca.location=/etc/kafka/ca.pem\n"
    )
    assert parse_properties(text, "f.properties") == {**SASL, "sasl.password": "pa=ss:word"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("security.protocol=SASL_SSL\n\njust words\n",
         "f.properties:3: expected key=value, got 'just words'"),
        ("=value\n", "f.properties:1: expected key=value, got '=value'"),
        ("a=1\n# x\na=2\n", "f.properties:3: a is set twice"),
        ("a=one \\\n  two\n", "f.properties:1: line continuations are not supported"),
    ],
)  # fmt: skip
def test_bad_properties_lines_are_one_line_errors_with_the_line_number(
    text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_properties(text, "f.properties")
    assert str(info.value) == message


def test_a_missing_properties_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_properties(tmp_path / "nope.properties")
    assert str(info.value) == (
        f"cannot read Kafka config file {tmp_path / 'nope.properties'}: No such file or directory"
    )


def _args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_job_options(parser)
    return parser.parse_args(argv)


def test_cli_kafka_config_file_becomes_the_job_setting(tmp_path: Path) -> None:
    f = tmp_path / "client.properties"
    f.write_text("".join(f"{k}={v}\n" for k, v in SASL.items()))
    config = job_config(_args(["m:job", "--kafka-config", str(f)]), "b:9092")
    assert config["kafka_config"] == SASL
    assert config["bootstrap_servers"] == "b:9092"


def test_cli_kafka_config_file_with_a_refused_key_fails_before_anything(tmp_path: Path) -> None:
    f = tmp_path / "client.properties"
    f.write_text("security.protocol=SSL\nplugin.library.paths=/tmp/evil.so\n")
    with pytest.raises(ConfigError) as info:
        job_config(_args(["m:job", "--kafka-config", str(f)]), "b:9092")
    assert str(info.value) == (
        "job setting kafka_config: refused plugin.library.paths loads a shared library into "
        "the worker (librdkafka plugins)"
    )


@pytest.mark.parametrize("command", ["run", "submit"])
def test_cli_kafka_config_errors_are_exactly_one_line_on_stderr(
    tmp_path: Path, command: str
) -> None:
    bad = tmp_path / "bad.properties"
    bad.write_text("security.protocol=SASL_SSL\nsasl.kerberos.kinit.cmd=touch /tmp/x\n")
    broken = tmp_path / "broken.properties"
    broken.write_text("security.protocol=SASL_SSL\nno separator here\n")
    env = dict(os.environ, STREAMER_HOME=str(tmp_path / "home"))
    base = [sys.executable, "-m", "streamer.cli", command, "examples.keyed_count:job",
            "--bootstrap-servers", "127.0.0.1:1"]  # fmt: skip
    if command == "submit":
        base += ["--coordinator", "127.0.0.1:1"]
    for path, message in (
        (bad, "error: job setting kafka_config: refused sasl.kerberos.kinit.cmd is a shell "
              "command the worker runs"),
        (broken, f"error: {broken}:2: expected key=value, got 'no separator here'"),
        (tmp_path / "none.properties",
         f"error: cannot read Kafka config file {tmp_path / 'none.properties'}: "
         "No such file or directory"),
    ):  # fmt: skip
        result = subprocess.run(
            [*base, "--kafka-config", str(path)],
            capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        assert result.stderr.strip() == message
        assert not (tmp_path / "home" / "run").exists() or command == "submit"


# ------------------------------------------------- every client gets the settings
class _Captured(Exception):
    pass


def _capture(monkeypatch: pytest.MonkeyPatch, name: str) -> list[dict[str, Any]]:
    import confluent_kafka

    seen: list[dict[str, Any]] = []

    def fake(config: dict[str, Any]) -> Any:
        seen.append(dict(config))
        raise _Captured

    monkeypatch.setattr(confluent_kafka, name, fake)
    return seen


def test_the_source_consumer_gets_the_job_settings_and_keeps_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamer.connectors.source import KafkaSource

    seen = _capture(monkeypatch, "Consumer")
    source = KafkaSource(
        "b:9092", "events", group_id="g1", kafka_config={**SASL, "fetch.wait.max.ms": 10}
    )
    with pytest.raises(_Captured):
        source.open()
    (config,) = seen
    assert {k: config[k] for k in SASL} == SASL
    assert config["fetch.wait.max.ms"] == 10
    assert (config["group.id"], config["enable.auto.commit"]) == ("g1", False)
    assert config["isolation.level"] == "read_committed"


def test_sink_dead_letter_and_late_output_producers_get_the_job_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamer.connectors.dead_letter import DeadLetterWriter
    from streamer.connectors.sink import KafkaSink
    from streamer.runtime.join_factory import LateSideOutput

    seen = _capture(monkeypatch, "Producer")
    sink = KafkaSink("b:9092", "out", delivery="exactly_once", kafka_config=SASL)
    for opening in (sink.open, DeadLetterWriter("b:9092", "in.dlq", 1.0, kafka_config=SASL).open,
                    lambda: LateSideOutput("b:9092", "late", SASL)):  # fmt: skip
        with pytest.raises(_Captured):
            opening()
    assert len(seen) == 3
    for config in seen:
        assert {k: config[k] for k in SASL} == SASL
        assert config["bootstrap.servers"] == "b:9092"
    assert seen[0]["transactional.id"] == sink.transactional_id
    assert seen[0]["acks"] == "all" and seen[1]["enable.idempotence"] is True


def test_connectors_refuse_dangerous_keys_when_made() -> None:
    from streamer.connectors.sink import KafkaSink
    from streamer.connectors.source import KafkaSource

    with pytest.raises(ConfigError, match=r"refused ssl\.engine\.location"):
        KafkaSource("b:9092", "events", kafka_config={"ssl.engine.location": "/tmp/e.so"})
    with pytest.raises(ConfigError, match=r"refused transactional\.id is managed by streamer"):
        KafkaSink("b:9092", "out", kafka_config={"transactional.id": "mine"})


def test_tasks_get_the_kafka_config_setting() -> None:
    from types import SimpleNamespace

    from streamer.coordinator.jobmaster import task_settings

    handler: Any = SimpleNamespace(lossless=False, strategy_name="region")
    settings = task_settings(
        {"bootstrap_servers": "b:9092", "kafka_config": SASL}, Path("/tmp/x"), handler
    )
    assert settings["kafka_config"] == SASL


def test_a_refused_connection_is_not_blamed_on_the_security_settings() -> None:
    from streamer.connectors.kafka_common import connect_error, unreachable

    config = client_config("127.0.0.1:1", kafka_config={"socket.connection.setup.timeout.ms": 1000})
    assert connect_error(config, 1.0) is None
    assert unreachable("127.0.0.1:1", 1.0, config) == (
        "cannot reach Kafka at 127.0.0.1:1 within 1 s: check that the broker runs and bootstrap "
        "servers are right (`streamer kafka status`); for a secured cluster, give its "
        "security.protocol and credentials in the job's kafka_config (--kafka-config)"
    )
