"""`CachedChannelProvider`: swaps a gate's channels to redeployed producer attempts.

Threading contract: `CachedChannelProvider.update_partition_info` must be
called on the task's event loop (from another thread:
``loop.call_soon_threadsafe``); ``on_done`` callbacks run on that loop.
Ordering contract: an update is applied only after the task has dequeued the
old attempt's `UnavailableEvent`, so no item of the old attempt follows an
item of the new one.
"""

from __future__ import annotations

import logging
from typing import Protocol

from netlayer.gate.channel import InputChannel
from netlayer.gate.connector import ChannelConnector
from netlayer.gate.states import ChannelEvent, ChannelState
from netlayer.gate.values import Address, ChannelUpdateError, OnDone, call_on_done

__all__ = ["CachedChannelProvider"]

log = logging.getLogger(__name__)

_AFTER_END = frozenset({ChannelState.FINISHING, ChannelState.FINISHED})


class ProviderGate(Protocol):
    """What the provider needs of its `InputGate`."""

    channels: list[InputChannel]
    connector: ChannelConnector

    def producer_failed(
        self, channel_index: int, producer_attempt: int | None = None, reason: str = ""
    ) -> None: ...


class CachedChannelProvider:
    """Applies `update_partition_info` to a gate's channels, caching updates until drained.

    ``update_partition_info(channel, address, attempt, on_done, replay_from=None)``
    (the coordinator's UpdatePartitionInfo after it redeployed a producer):

    - if the channel still holds items of the old attempt (its
      `UnavailableEvent` has not been processed yet) the update is cached and
      applied right after the task dequeues that event; if the loss had not
      even been noticed, the update itself marks the producer lost;
    - otherwise (the channel is drained) it is applied at once.

    Applying it connects to ``address``, sends a `PartitionRequest` with full
    credit (and ``replay_from``: the producer first replays what it retained
    after that checkpoint's barrier), checks that the producer is ``attempt``,
    makes the channel available again (sequence numbers restart at 0) and calls
    ``on_done(channel, None)`` (the coordinator's ack). A producer that cannot
    replay fails it at once with `ReplayRefused` (a `ChannelUpdateError`).
    Failure to connect within ``connect_timeout`` calls ``on_done(channel,
    ChannelUpdateError)`` and leaves the channel unavailable; a newer update
    replacing a pending one completes the older one with ``ChannelUpdateError``
    too. A channel
    that already received `EndOfPartition` acknowledges at once: nothing more
    can come from its producer.
    """

    def __init__(self, gate: ProviderGate) -> None:
        self._gate = gate
        self._cached: dict[int, tuple[Address, int, OnDone, int | None]] = {}

    def pending(self, channel_index: int) -> bool:
        """True while an update for the channel is cached (waiting for the drain)."""
        return channel_index in self._cached

    def update_partition_info(
        self,
        channel_index: int,
        address: Address,
        attempt: int,
        on_done: OnDone,
        replay_from: int | None = None,
    ) -> None:
        gate = self._gate
        ch = gate.channels[channel_index]
        if attempt < ch.producer_attempt:
            error = f"stale update to attempt {attempt}; channel is at {ch.producer_attempt}"
            call_on_done(on_done, channel_index, ChannelUpdateError(error))
            return
        state = ch.state
        if state in _AFTER_END:
            log.info(
                "channel %d already received EndOfPartition; acknowledging update "
                "without reconnecting",
                channel_index,
            )
            call_on_done(on_done, channel_index, None)
            return
        if (
            state is ChannelState.AVAILABLE
            and attempt == ch.producer_attempt
            and address == ch.address
        ):
            call_on_done(on_done, channel_index, None)  # a repeated update: already swapped
            return
        old = self._cached.pop(channel_index, None)
        if old is not None:
            call_on_done(old[2], channel_index, ChannelUpdateError("superseded by a newer update"))
        if ch.is_available:  # CONNECTING, AVAILABLE or DRAINING: the task must drain it first
            if state is not ChannelState.DRAINING:
                gate.producer_failed(
                    channel_index, reason=f"producer redeployed as attempt {attempt}"
                )
            self._cached[channel_index] = (address, attempt, on_done, replay_from)
            log.info(
                "channel %d: update to attempt %d at %s cached until drained",
                channel_index,
                attempt,
                address,
            )
            return
        # Drained (UNAVAILABLE, or UPDATE_PENDING for an older update): apply now.
        gate.connector.cancel(ch, ChannelUpdateError("superseded by a newer update"))
        self._apply(ch, address, attempt, on_done, replay_from)

    def _on_drained(self, ch: InputChannel) -> None:
        """The task dequeued ``ch``'s `UnavailableEvent`: apply its cached update, if any."""
        cached = self._cached.pop(ch.index, None)
        if cached is not None:
            self._apply(ch, *cached)

    def _apply(
        self,
        ch: InputChannel,
        address: Address,
        attempt: int,
        on_done: OnDone,
        replay_from: int | None,
    ) -> None:
        log.info("channel %d: swapping to producer attempt %d at %s", ch.index, attempt, address)
        ch.address = address
        ch.producer_attempt = attempt
        ch.replay_from = replay_from
        ch.deserializer.clear()
        ch._fire(ChannelEvent.UPDATE_APPLIED)
        self._gate.connector.start(ch, on_done)
