"""The decisions around Docker, without an engine: whether make test installs and starts
one or says why not, how the run is split, which Kafka backend and image a session
uses, testcontainers' settings, and what the report says."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from streamer.localkafka.jars import kafka_version
from streamer.testing.kafka import (
    ENV_BACKEND,
    ENV_BOOTSTRAP,
    ENV_DOCKER_UNAVAILABLE,
    ENV_IMAGE,
    LOCAL_IMAGE,
    OFFICIAL_IMAGE,
    KafkaBackend,
    choose_kafka_backend,
    choose_kafka_image,
    engine_answers,
    engine_is_local,
    no_engine_reason,
)
from streamer.testing.kafka import (
    testcontainers_settings as tc_settings,
)
from streamer.testing.plugin import summary_line

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # scripts/ is tooling of the repository, not of the package
    sys.path.insert(0, str(REPO))
engine = importlib.import_module("scripts.engine")
testrun = importlib.import_module("scripts.testrun")
OUR_HOST, Decision, HostFacts = engine.OUR_HOST, engine.Decision, engine.HostFacts
decide, read_os_ids = engine.decide, engine.read_os_ids
CONTAINER_PART, plan_parts = testrun.CONTAINER_PART, testrun.plan_parts

ALL = frozenset({"apt-get", "dockerd", "debootstrap", "docker-compose"})


def facts(**kw: object) -> object:
    base: dict[str, object] = {
        "system": "Linux",
        "euid": 0,
        "os_ids": frozenset({"debian"}),
        "commands": frozenset({"apt-get"}),
    }
    return HostFacts(**{**base, **kw})


# ------------------------------------------------------------------ engine
def test_root_on_debian_without_docker_installs_and_starts_it() -> None:
    d = decide(facts(), answering=None)
    assert d == Decision(
        "start", host=OUR_HOST, install=("docker.io", "debootstrap", "docker-compose")
    )


def test_an_installed_dockerd_is_started_without_installing() -> None:
    assert decide(facts(commands=ALL), answering=None) == Decision("start", host=OUR_HOST)


def test_an_engine_that_answers_is_used_and_only_missing_tools_installed() -> None:
    d = decide(facts(commands=frozenset({"apt-get", "dockerd"})), answering="unix:///x.sock")
    assert d == Decision("use", host="unix:///x.sock", install=("debootstrap", "docker-compose"))
    # not root: used as it is, nothing installed
    d = decide(facts(euid=1000), answering="unix:///x.sock")
    assert d == Decision("use", host="unix:///x.sock")


def test_not_root_means_no_engine_with_the_reason() -> None:
    d = decide(facts(euid=1000, commands=ALL), answering=None)
    assert d.action == "none"
    assert "not root" in d.reason and "cannot install or start dockerd" in d.reason


@pytest.mark.parametrize(
    ("kw", "said"),
    [
        ({"commands": frozenset()}, "has no apt-get"),
        ({"os_ids": frozenset({"fedora"})}, "is not Debian or Ubuntu"),
    ],
)
def test_no_way_to_install_dockerd_means_no_engine(kw: dict[str, object], said: str) -> None:
    d = decide(facts(**kw), answering=None)
    assert d.action == "none"
    assert "no dockerd is installed" in d.reason and said in d.reason


def test_ubuntu_counts_and_other_systems_do_not_start_one() -> None:
    assert decide(facts(os_ids=frozenset({"ubuntu", "debian"})), None).action == "start"
    d = decide(facts(system="Darwin", euid=501), None)
    assert d.action == "none" and "on Darwin" in d.reason


@pytest.mark.parametrize("value", ["off", "0", "false", "NO"])
def test_the_switch_turns_it_off_even_with_an_engine(value: str) -> None:
    d = decide(facts(switch=value), answering="unix:///var/run/docker.sock")
    assert d.action == "none" and f"STREAMER_DOCKER={value}" in d.reason


def test_os_release_ids() -> None:
    text = 'PRETTY_NAME="Ubuntu 24.04"\nID=ubuntu\nID_LIKE=debian\n'
    assert read_os_ids(text) == {"ubuntu", "debian"}
    assert read_os_ids('ID="linuxmint"\nID_LIKE="ubuntu debian"') == {
        "linuxmint",
        "ubuntu",
        "debian",
    }


# -------------------------------------------------------------- the run
def test_with_an_engine_the_run_has_two_parts_that_cover_everything_once() -> None:
    engine = {"DOCKER_HOST": "unix:///run/x.sock"}
    one, two = plan_parts(["-x"], engine)
    assert one.env == {ENV_BACKEND: "local"}
    assert one.args == ("-x", *(f"--ignore={p}" for p in CONTAINER_PART))
    assert two.env == {**engine, ENV_BACKEND: "container"}
    assert two.args == ("-x", *CONTAINER_PART)
    assert all((REPO / p).exists() for p in CONTAINER_PART)


def test_without_an_engine_one_run_carries_the_reason() -> None:
    (only,) = plan_parts([], None, "not root")
    assert only.args == () and only.env == {ENV_DOCKER_UNAVAILABLE: "not root"}


def test_given_test_paths_run_as_given() -> None:
    (only,) = plan_parts(["tests/unit", "-q"], {"DOCKER_HOST": "unix:///x"})
    assert only.args == ("tests/unit", "-q") and ENV_BACKEND not in only.env


# ------------------------------------------------------ backend and image
def test_the_backend_can_be_chosen_and_the_bootstrap_still_wins() -> None:
    def never() -> bool:
        raise AssertionError("no ping when the choice is explicit")

    assert choose_kafka_backend({ENV_BACKEND: "local"}, never) is KafkaBackend.LOCAL
    assert choose_kafka_backend({ENV_BACKEND: "container"}, never) is KafkaBackend.CONTAINER
    assert choose_kafka_backend({ENV_BACKEND: "auto"}, lambda: False) is KafkaBackend.LOCAL
    both = {ENV_BACKEND: "container", ENV_BOOTSTRAP: "b:9092"}
    assert choose_kafka_backend(both, never) is KafkaBackend.ENV
    with pytest.raises(ValueError, match="use local, container or auto"):
        choose_kafka_backend({ENV_BACKEND: "docker"}, never)


def test_the_official_image_is_the_default_and_the_local_one_is_used_without_a_registry() -> None:
    assert f"apache/kafka:{kafka_version()}" == OFFICIAL_IMAGE
    assert f"streamer-kafka:{kafka_version()}" == LOCAL_IMAGE
    assert choose_kafka_image({ENV_IMAGE: "my/kafka:1"}, lambda _: False) == "my/kafka:1"
    assert choose_kafka_image({}, lambda _: True) == OFFICIAL_IMAGE
    assert choose_kafka_image({}, lambda i: i == LOCAL_IMAGE) == LOCAL_IMAGE
    assert choose_kafka_image({}, lambda _: False) == OFFICIAL_IMAGE  # pulled


def test_testcontainers_settings_for_an_engine_on_this_machine() -> None:
    assert engine_is_local({}, bridge_here=True)
    assert engine_is_local({"DOCKER_HOST": "unix:///run/x.sock"}, bridge_here=True)
    assert not engine_is_local({"DOCKER_HOST": "tcp://remote:2375"}, bridge_here=True)
    assert not engine_is_local({}, bridge_here=False)
    assert tc_settings({}, engine_local=True) == {
        "ryuk_disabled": "true",
        "connection_mode": "docker_host",
        "host": "127.0.0.1",
    }
    assert tc_settings({}, engine_local=False) == {"ryuk_disabled": "true"}


def test_a_users_testcontainers_settings_are_left_alone() -> None:
    env = {
        "TESTCONTAINERS_RYUK_DISABLED": "false",
        "TESTCONTAINERS_CONNECTION_MODE": "gateway_ip",
        "TESTCONTAINERS_HOST_OVERRIDE": "10.0.0.1",
    }
    assert tc_settings(env, engine_local=True) == {}


# ---------------------------------------------------------------- report
def test_an_engine_is_not_used_when_make_test_said_none_may_be(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("streamer.testing.kafka.docker_ping", lambda: True)
    assert engine_answers({}) is True
    assert engine_answers({ENV_DOCKER_UNAVAILABLE: "STREAMER_DOCKER=off ..."}) is False


def test_the_skip_reason_is_make_tests_or_the_pings() -> None:
    assert no_engine_reason({ENV_DOCKER_UNAVAILABLE: "not root"}) == "NOT RUN: not root"
    reason = no_engine_reason({"DOCKER_HOST": "unix:///nope.sock"})
    assert reason.startswith("NOT RUN: no Docker engine answers a ping at unix:///nope.sock")


def test_the_summary_says_which_broker_and_why() -> None:
    container = {"backend": "container", "bootstrap": "127.0.0.1:1", "detail": "image x"}
    assert summary_line(container, {}) == (
        "streamer: Kafka for this run: container broker at 127.0.0.1:1 (image x)"
    )
    local = {"backend": "local", "bootstrap": "127.0.0.1:2", "detail": "jars"}
    forced = summary_line(local, {ENV_BACKEND: "local"})
    assert forced.endswith("(jars); chosen by STREAMER_KAFKA_BACKEND=local")
    skipped = summary_line(local, {ENV_DOCKER_UNAVAILABLE: "not root"})
    assert skipped.endswith("the testcontainers path was not run: NOT RUN: not root")
    assert "none" in summary_line({}, {})
