"""What a lossless failover does when a producer refuses the replay because its
retention overflowed (``retention_overflow``), and how ``streamer run`` shows a
failover's counts."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.coordinator.failover import FailoverHandler, Recovery
from streamer.coordinator.settings import validate_settings
from streamer.errors import ConfigError
from streamer.graph import TaskId
from streamer.local.failover_counts import describe_counts, size
from streamer.local.progress import FailoverPrinter
from tests.graphs import keyed_job

REFUSED = (
    "exception: ReplayDiverged: cannot connect channel 0 to ('127.0.0.1', 4000): "
    "producer error: cannot replay from checkpoint 3: retention overflowed"
)
NOT_RETAINED = "exception: ReplayDiverged: cannot replay from checkpoint 3: its barrier is gone"


def handler(**settings: Any) -> FailoverHandler:
    config = {"strategy": "individual", "checkpoint_interval": 1.0, **settings}
    return FailoverHandler(keyed_job(), validate_settings(config))


def test_overflow_restarts_the_region_by_default() -> None:
    plan = handler().replay_refused(TaskId("mid", 1), REFUSED)
    assert plan.recovery == Recovery.RESTART and len(plan.tasks) == 8
    assert plan.fallback_reason == (
        f"replay failed ({REFUSED}): lossless recovery restarts the region "
        "(retention_overflow=region)"
    )
    assert plan.lossy_reason is None


def test_overflow_goes_lossy_for_the_task_alone_when_set() -> None:
    plan = handler(retention_overflow="lossy").replay_refused(TaskId("mid", 1), REFUSED)
    assert (plan.recovery, plan.tasks, plan.lossless) == (
        Recovery.INDIVIDUAL,
        frozenset({TaskId("mid", 1)}),
        False,
    )
    assert plan.fallback_reason is None
    assert plan.lossy_reason is not None and "retention_overflow=lossy" in plan.lossy_reason


def test_a_refusal_for_another_reason_always_restarts_the_region() -> None:
    plan = handler(retention_overflow="lossy").replay_refused(TaskId("mid", 1), NOT_RETAINED)
    assert plan.recovery == Recovery.RESTART and plan.lossy_reason is None
    assert plan.fallback_reason is not None
    assert "retention_overflow" not in plan.fallback_reason


def test_a_fresh_failure_naming_an_overflow_follows_the_setting() -> None:
    """A replay that overflowed after its failover ended fails the task anew."""
    h = handler(retention_overflow="lossy")
    plan = h.plan(TaskId("sink", 0), REFUSED, 0.0, 3)
    assert plan.recovery == Recovery.INDIVIDUAL and not plan.lossless and plan.lossy_reason
    assert handler().plan(TaskId("sink", 0), REFUSED, 0.0, 3).recovery == Recovery.RESTART


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"retention_overflow": "drop"},
            "job setting retention_overflow='drop' must be one of region, lossy",
        ),
        (
            {"retention_spill_bytes": -1},
            "job setting retention_spill_bytes=-1 must be an integer >= 0",
        ),
    ],
)
def test_bad_overflow_settings_are_one_line(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate_settings(config)
    assert str(info.value) == message


def test_the_failover_line_shows_the_retention_figures() -> None:
    lossless = {
        "replay_from": 4,
        "records_replayed": 1204,
        "bytes_replayed_from_memory": 3 * 1024 + 410,
        "bytes_replayed_from_disk": 0,
        "records_deduplicated": 310,
        "records_dropped": 0,
        "retention_overflows": 0,
    }
    assert describe_counts(lossless) == (
        "; replayed 1,204 records (3.4 KiB from memory, 0 B from disk), 310 deduplicated"
    )
    lossy = {"records_dropped": 212, "retention_overflows": 3, "lossy_reason": "why"}
    assert (
        describe_counts(lossy)
        == "; went lossy: why; lost 212 records, retention overflowed 3 times"
    )
    assert describe_counts({"records_dropped": None}) == ""  # a region restart
    assert size(5 << 20) == "5.0 MiB"


def test_a_failover_is_printed_once_its_counts_came() -> None:
    rec = {"id": 1, "task": "mid#1", "cause": "killed", "strategy": "individual",
           "detected_at": 1.0, "tasks_restarted": ["mid#1"], "status": "done",
           "counting": True, "records_dropped": None}  # fmt: skip
    printer = FailoverPrinter()
    assert printer.new_lines([rec]) == []
    lines = printer.new_lines([{**rec, "counting": False, "records_dropped": 7}])
    assert len(lines) == 1 and lines[0].endswith("; lost 7 records")
