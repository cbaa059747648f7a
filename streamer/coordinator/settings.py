"""Job settings: every name a job's config may use, its type and its range.

``validate_settings`` is called on every submission (the coordinator) and by the CLI
before it starts anything, so a typo or a bad value is one clear line, not a
traceback from deep inside nor a setting silently ignored. Defaults stay where the
settings are used (``JobMaster``, the task runtime); the README lists them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any

from streamer.connectors.client_config import check_kafka_config
from streamer.errors import ConfigError

Check = Callable[[str, Any], Any]


def _number(*, minimum: float = 0.0, positive: bool = False, optional: bool = False) -> Check:
    def check(key: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"job setting {key}={value!r} must be a number")
        if value < minimum or (positive and value <= 0):
            bound = "> 0" if positive else f">= {minimum:g}"
            raise ConfigError(f"job setting {key}={value!r} must be {bound}")
        return value

    return check


def _integer(*, minimum: int = 0, optional: bool = False) -> Check:
    def check(key: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"job setting {key}={value!r} must be an integer >= {minimum}")
        return value

    return check


def _text(*choices: str, optional: bool = False) -> Check:
    def check(key: str, value: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value or (choices and value not in choices):
            allowed = f"one of {', '.join(choices)}" if choices else "a non-empty string"
            raise ConfigError(f"job setting {key}={value!r} must be {allowed}")
        return value

    return check


def _kafka_config(key: str, value: Any) -> Any:
    return check_kafka_config(value, f"job setting {key}")


def _mapping(key: str, value: Any) -> Any:
    if not isinstance(value, dict):
        raise ConfigError(f"job setting {key}={value!r} must be a mapping")
    return value


SETTINGS: dict[str, Check] = {
    "strategy": _text("full", "region", "individual"),
    "individual_recovery": _text("lossy", "lossless"),
    "retention_bytes": _integer(minimum=1),
    "retention_spill_bytes": _integer(minimum=0),
    "retention_overflow": _text("region", "lossy"),
    "bootstrap_servers": _text(),
    "kafka_config": _kafka_config,
    "params": _mapping,
    "checkpoint_interval": _number(positive=True, optional=True),
    "checkpoint_dir": _text(optional=True),
    "checkpoint_timeout": _number(positive=True),
    "checkpoints_retained": _integer(minimum=1),
    "channel_update_timeout": _number(positive=True),
    "max_failures_per_task": _integer(),
    "max_total_failures": _integer(),
    "restart_delay": _number(),
    "restart_backoff_multiplier": _number(minimum=1.0),
    "failure_window": _number(positive=True, optional=True),
    "slot_request_timeout": _number(),
    "buffer_timeout": _number(),
    "metrics_interval": _number(positive=True),
    "idle_timeout_ms": _integer(optional=True),
    "watermark_interval": _number(),
    "join_mirror_keys": _integer(minimum=1),
    "sink_commit_interval": _number(positive=True),
    "source_batch": _integer(minimum=1),
    "connect_timeout": _number(positive=True),
    "kafka_timeout": _number(positive=True, optional=True),
    "log_level": _text("DEBUG", "INFO", "WARNING", "ERROR"),
    "from_savepoint": _text(optional=True),
}


def validate_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` checked against `SETTINGS`; `ConfigError` names the first mistake."""
    for key, value in config.items():
        check = SETTINGS.get(key)
        if check is None:
            close = difflib.get_close_matches(key, SETTINGS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see the README's job settings"
            raise ConfigError(f"unknown job setting {key!r}: {hint}")
        check(key, value)
    return dict(config)
