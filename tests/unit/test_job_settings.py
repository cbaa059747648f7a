"""Job settings are checked on submission: one clear line per mistake."""

from __future__ import annotations

from typing import Any

import pytest

from streamer.coordinator.settings import SETTINGS, validate_settings
from streamer.errors import ConfigError


def test_a_full_valid_config_passes_unchanged() -> None:
    config: dict[str, Any] = {
        "strategy": "region",
        "bootstrap_servers": "127.0.0.1:9092",
        "params": {"in": "orders"},
        "checkpoint_interval": 5,
        "checkpoint_timeout": 60.0,
        "checkpoints_retained": 3,
        "max_failures_per_task": 0,
        "restart_delay": 0,
        "restart_backoff_multiplier": 2,
        "failure_window": None,
        "idle_timeout_ms": None,
        "slot_request_timeout": 0.5,
        "log_level": "DEBUG",
    }
    assert validate_settings(config) == config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"checkpoint_intreval": 5},
            "unknown job setting 'checkpoint_intreval': did you mean 'checkpoint_interval'?",
        ),
        ({"zzz": 1}, "unknown job setting 'zzz': see the README's job settings"),
        (
            {"strategy": "fastest"},
            "job setting strategy='fastest' must be one of full, region, individual",
        ),
        ({"restart_delay": "abc"}, "job setting restart_delay='abc' must be a number"),
        ({"restart_delay": -1}, "job setting restart_delay=-1 must be >= 0"),
        ({"checkpoint_interval": 0}, "job setting checkpoint_interval=0 must be > 0"),
        ({"metrics_interval": True}, "job setting metrics_interval=True must be a number"),
        ({"checkpoints_retained": 0}, "job setting checkpoints_retained=0 must be an integer >= 1"),
        ({"max_total_failures": 2.5}, "job setting max_total_failures=2.5 must be an integer >= 0"),
        (
            {"restart_backoff_multiplier": 0.5},
            "job setting restart_backoff_multiplier=0.5 must be >= 1",
        ),
        ({"params": ["a"]}, "job setting params=['a'] must be a mapping"),
        ({"bootstrap_servers": ""}, "job setting bootstrap_servers='' must be a non-empty string"),
    ],
)
def test_mistakes_are_one_line_each(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        validate_settings(config)
    assert str(excinfo.value) == message


def test_every_setting_the_coordinator_passes_to_tasks_is_known() -> None:
    from streamer.coordinator.jobmaster import TASK_SETTINGS

    assert set(TASK_SETTINGS) <= set(SETTINGS), set(TASK_SETTINGS) - set(SETTINGS)
