"""Failover strategies (pure decisions) and restart backoff limits."""

from __future__ import annotations

import pytest

from streamer.api import StreamEnvironment
from streamer.coordinator.failover.backoff import RestartBackoff
from streamer.coordinator.failover.strategies import make_strategy
from streamer.errors import ConfigError
from streamer.graph import ExecutionGraph, TaskId
from tests.graphs import ident, keyed_job


def pipelines_job() -> ExecutionGraph:
    """Two independent keyed pipelines: src(2) -hash-> proc(2) -> sink, for A and for B."""
    env = StreamEnvironment("pipes", default_parallelism=2)
    for p in "AB":
        (
            env.from_kafka(p, name=f"src{p}")
            .key_by(ident)
            .process(ident, name=f"proc{p}")
            .to_kafka(f"out{p}", name=f"sink{p}")
        )
    return env.build().execution_graph()


def T(text: str) -> TaskId:
    return TaskId.parse(text)


def test_full_restarts_every_task() -> None:
    eg = keyed_job()
    assert make_strategy("full", eg).tasks_to_restart(T("mid#1")) == frozenset(eg.tasks)
    assert len(eg.tasks) == 8


def test_region_of_an_all_to_all_job_is_every_task() -> None:
    eg = keyed_job()
    assert make_strategy("region", eg).tasks_to_restart(T("mid#1")) == frozenset(eg.tasks)


def test_region_of_independent_pipelines_is_only_the_failed_pipeline() -> None:
    eg = pipelines_job()
    assert len(eg.tasks) == 8
    region = make_strategy("region", eg).tasks_to_restart(T("srcB#0"))
    assert region == frozenset({T("srcB#0"), T("srcB#1"), T("procB#0"), T("procB#1")})
    other = make_strategy("region", eg).tasks_to_restart(T("procA#1"))
    assert other == frozenset({T("srcA#0"), T("srcA#1"), T("procA#0"), T("procA#1")})


def test_individual_restarts_only_the_failed_task_and_falls_back_to_its_region() -> None:
    eg = keyed_job()
    strategy = make_strategy("individual", eg)
    assert strategy.tasks_to_restart(T("mid#3")) == frozenset({T("mid#3")})
    assert strategy.fallback(T("mid#3")) == frozenset(eg.tasks)  # type: ignore[union-attr]
    with pytest.raises(KeyError):
        strategy.tasks_to_restart(T("nope#0"))


def test_unknown_strategy_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown failover strategy 'partial': use one of full"):
        make_strategy("partial", keyed_job())


def test_per_task_limit_fails_the_job_with_the_reason() -> None:
    backoff = RestartBackoff(max_failures_per_task=2, max_total_failures=100)
    t = T("mid#0")
    assert backoff.decide(t, 0.0).restart
    assert backoff.decide(t, 1.0).restart
    decision = backoff.decide(t, 2.0)
    assert not decision.restart
    assert decision.reason == "task mid#0 failed 3 times, more than max_failures_per_task=2"


def test_total_limit_counts_all_tasks() -> None:
    backoff = RestartBackoff(max_failures_per_task=10, max_total_failures=3)
    for i in range(3):
        assert backoff.decide(T(f"mid#{i}"), float(i)).restart
    decision = backoff.decide(T("mid#3"), 3.0)
    assert not decision.restart
    assert decision.reason == "the job had 4 task failures, more than max_total_failures=3"


def test_exponential_delay_is_per_task_and_capped() -> None:
    backoff = RestartBackoff(delay_s=0.1, multiplier=2.0, max_delay_s=0.5, max_failures_per_task=10)
    delays = [backoff.decide(T("a#0"), float(i)).delay_s for i in range(5)]
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    assert backoff.decide(T("b#0"), 9.0).delay_s == pytest.approx(0.1)


def test_failure_window_forgets_old_failures() -> None:
    backoff = RestartBackoff(max_failures_per_task=1, failure_window_s=10.0)
    assert backoff.decide(T("a#0"), 0.0).restart
    assert backoff.decide(T("a#0"), 11.0).restart  # the first one is outside the window
    assert not backoff.decide(T("a#0"), 12.0).restart
    assert backoff.failures(T("a#0")) == 2


def test_bad_backoff_settings() -> None:
    with pytest.raises(ConfigError):
        RestartBackoff(delay_s=-1)
    with pytest.raises(ConfigError):
        RestartBackoff(multiplier=0.5)


# ------------------------------------------------------- failover handler plans
def test_lossy_individual_plans_the_failed_task_alone() -> None:
    from streamer.coordinator.failover import FailoverHandler, Recovery

    lossy = {"strategy": "individual", "individual_recovery": "lossy", "checkpoint_interval": 1}
    assert not FailoverHandler(keyed_job(), lossy).lossless

    eg = keyed_job()
    # lossy: chosen, or without checkpoints (nothing to replay from)
    plan = FailoverHandler(eg, {"strategy": "individual"}).plan(T("mid#1"), "killed", 0.0, 3)
    assert (plan.recovery, plan.tasks, plan.lossless) == (
        Recovery.INDIVIDUAL,
        frozenset({T("mid#1")}),
        False,
    )


def test_lossless_individual_replays_alone_but_not_an_idle_timed_source() -> None:
    from streamer.coordinator.failover import FailoverHandler, Recovery

    eg = keyed_job()
    handler = FailoverHandler(
        eg,
        {"strategy": "individual", "checkpoint_interval": 1.0},  # lossless: the default
    )
    for n, task in enumerate(["sink#0", "mid#1", "src#0"]):
        plan = handler.plan(T(task), "killed", float(n), 3)
        assert (plan.recovery, plan.tasks, plan.lossless) == (
            Recovery.INDIVIDUAL,
            frozenset({T(task)}),
            True,
        )
    idle = FailoverHandler(
        eg, {"strategy": "individual", "checkpoint_interval": 1.0, "idle_timeout_ms": 50}
    ).plan(T("src#0"), "killed", 2.0, 3)
    assert idle.recovery == Recovery.RESTART and idle.tasks == frozenset(eg.tasks)
    assert idle.fallback_reason is not None and "idle_timeout_ms" in idle.fallback_reason
    first = handler.plan(T("sink#1"), "killed", 3.0, 0)
    assert first.recovery == Recovery.RESTART
    assert first.fallback_reason is not None and "no completed checkpoint" in first.fallback_reason
    replay = handler.plan(T("sink#1"), "exception: cannot replay from checkpoint 3", 4.0, 3)
    assert replay.recovery == Recovery.RESTART
    assert replay.fallback_reason is not None and replay.fallback_reason.startswith("replay failed")


def test_the_handler_fails_the_job_past_the_limits() -> None:
    from streamer.coordinator.failover import FailoverHandler, Recovery

    handler = FailoverHandler(keyed_job(), {"strategy": "full", "max_failures_per_task": 1})
    assert handler.plan(T("mid#0"), "boom", 0.0).recovery == Recovery.RESTART
    plan = handler.plan(T("mid#0"), "boom", 1.0)
    assert plan.recovery == Recovery.UNRECOVERABLE
    assert plan.reason == (
        "task mid#0 failed 2 times, more than max_failures_per_task=1; last failure: boom"
    )
