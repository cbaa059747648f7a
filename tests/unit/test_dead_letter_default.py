"""Dead-letter topics: the API defaults them to `<topic>.dlq`, and `streamer run`
creates them with the job's other topics."""

from __future__ import annotations

import pytest

from streamer.api import StreamEnvironment
from streamer.graph import GraphError
from streamer.local.commands import topics_of


def source_config(env: StreamEnvironment) -> dict[str, object]:
    return dict(env.build().job_graph.operator("kafka_source-0").config)


def test_dead_letter_without_a_topic_defaults_to_topic_dlq() -> None:
    env = StreamEnvironment("j")
    env.from_kafka("orders", on_decode_error="dead_letter").to_kafka("out")
    config = source_config(env)
    assert config["on_decode_error"] == "dead_letter"
    assert config["dead_letter_topic"] == "orders.dlq"


def test_a_named_dead_letter_topic_is_kept() -> None:
    env = StreamEnvironment("j")
    env.from_kafka("orders", on_decode_error="dead_letter", dead_letter_topic="bad").to_kafka("o")
    assert source_config(env)["dead_letter_topic"] == "bad"


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_other_policies_have_no_dead_letter_topic(policy: str) -> None:
    env = StreamEnvironment("j")
    env.from_kafka("orders", on_decode_error=policy).to_kafka("out")  # type: ignore[arg-type]
    assert source_config(env)["dead_letter_topic"] is None
    with pytest.raises(GraphError, match=r"^dead_letter_topic is only used with on_decode_error="):
        env.from_kafka("orders", on_decode_error=policy, dead_letter_topic="d")  # type: ignore[arg-type]


def test_streamer_run_creates_the_default_dead_letter_topic() -> None:
    env = StreamEnvironment("j", default_parallelism=2)
    orders = env.from_kafka("orders", on_decode_error="dead_letter").key_by(lambda o: o["id"])
    pays = env.from_kafka("pays", on_decode_error="skip").key_by(lambda p: p["id"])
    orders.interval_join(pays, lower_ms=0, upper_ms=10, late_topic="late").to_kafka("out")
    assert topics_of(env.build()) == ["late", "orders", "orders.dlq", "out", "pays"]
