"""Values the consumer side shares: `ChannelInfo`, `UnavailableEvent`, `ChannelUpdateError`,
`ReplayRefused`.

Immutable values and a helper, no I/O; safe to share between threads.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Address",
    "ChannelInfo",
    "ChannelUpdateError",
    "OnDone",
    "ReplayRefused",
    "UnavailableEvent",
]

log = logging.getLogger(__name__)

Address = tuple[str, int]
OnDone = Callable[[int, "Exception | None"], None]
"""``on_done(channel_index, error)``: the channel update finished (``error`` is None) or failed."""


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """Where a channel reads from: a producer's partition, our subpartition, its attempt.

    ``replay_from``: the checkpoint this consumer attempt restored; the
    producer first replays what it retained after that checkpoint's barrier
    (``None``: no replay, data starts with what is emitted next).
    """

    partition_id: str
    subpartition: int
    address: Address
    producer_attempt: int = 0
    replay_from: int | None = None


@dataclass(frozen=True, slots=True)
class UnavailableEvent:
    """Local marker: the channel's producer (``producer_attempt``) is gone. Never sent."""

    producer_attempt: int
    reason: str = ""


class ChannelUpdateError(Exception):
    """A channel update (or initial connection) failed, timed out or was superseded."""


class ReplayRefused(ChannelUpdateError):
    """The producer cannot replay from the requested checkpoint (it is not retried).

    The message contains the producer's reason, ``cannot replay from checkpoint <id>: <why>``.
    """


def call_on_done(on_done: OnDone | None, index: int, error: Exception | None) -> None:
    """Call ``on_done(index, error)`` if given; an exception in it is logged, not raised."""
    if on_done is None:
        return
    try:
        on_done(index, error)
    except Exception:
        log.exception("channel update callback failed")
