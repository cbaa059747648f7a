"""The availability state tables and the loss ledger, without sockets or an event loop."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import pytest

from netlayer.gate.states import (
    AVAILABLE_TO_TASK,
    CHANNEL_TRANSITIONS,
    ChannelEvent,
    ChannelState,
    next_channel_state,
)
from netlayer.partition.loss import LossLedger
from netlayer.partition.states import (
    SUBPARTITION_TRANSITIONS,
    SubpartitionEvent,
    SubpartitionState,
    next_subpartition_state,
)
from netlayer.statetable import IllegalTransition, transition

S = SubpartitionState
SE = SubpartitionEvent
C = ChannelState
CE = ChannelEvent

# The tables written out by hand: a change to either table must change these too.
SUBPARTITION_LEGAL = {
    (S.WAITING_FOR_CONSUMER, SE.PARTITION_REQUEST, S.AVAILABLE),
    (S.AVAILABLE, SE.PARTITION_REQUEST, S.AVAILABLE),
    (S.FINISHED, SE.PARTITION_REQUEST, S.AVAILABLE),
    (S.RELEASED, SE.PARTITION_REQUEST, S.AVAILABLE),
    (S.CONSUMER_FAILED, SE.PARTITION_REQUEST, S.AVAILABLE),
    (S.AVAILABLE, SE.END_OF_PARTITION_SENT, S.FINISHED),
    (S.FINISHED, SE.CONSUMER_RELEASED, S.RELEASED),
    (S.WAITING_FOR_CONSUMER, SE.CONSUMER_FAILED, S.CONSUMER_FAILED),
    (S.AVAILABLE, SE.CONSUMER_FAILED, S.CONSUMER_FAILED),
    (S.FINISHED, SE.CONSUMER_FAILED, S.CONSUMER_FAILED),
    (S.RELEASED, SE.CONSUMER_FAILED, S.CONSUMER_FAILED),
    (S.CONSUMER_FAILED, SE.CONSUMER_FAILED, S.CONSUMER_FAILED),
    # Lossless: retain while the consumer is down, drop once retention overflows.
    (S.RETAINING, SE.PARTITION_REQUEST, S.AVAILABLE),
    (S.RETAINING, SE.CONSUMER_FAILED, S.CONSUMER_FAILED),
    (S.WAITING_FOR_CONSUMER, SE.CONSUMER_FAILED_LOSSLESS, S.RETAINING),
    (S.AVAILABLE, SE.CONSUMER_FAILED_LOSSLESS, S.RETAINING),
    (S.FINISHED, SE.CONSUMER_FAILED_LOSSLESS, S.RETAINING),
    (S.RELEASED, SE.CONSUMER_FAILED_LOSSLESS, S.RETAINING),
    (S.RETAINING, SE.CONSUMER_FAILED_LOSSLESS, S.RETAINING),
    (S.RETAINING, SE.RETENTION_OVERFLOWED, S.CONSUMER_FAILED),
}

CHANNEL_LEGAL = {
    (C.CONNECTING, CE.CONNECTED, C.AVAILABLE),
    (C.CONNECTING, CE.PRODUCER_LOST, C.DRAINING),
    (C.AVAILABLE, CE.PRODUCER_LOST, C.DRAINING),
    (C.AVAILABLE, CE.END_OF_PARTITION_RECEIVED, C.FINISHING),
    (C.DRAINING, CE.UNAVAILABLE_DEQUEUED, C.UNAVAILABLE),
    (C.UNAVAILABLE, CE.UPDATE_APPLIED, C.UPDATE_PENDING),
    (C.UPDATE_PENDING, CE.UPDATE_APPLIED, C.UPDATE_PENDING),
    (C.UPDATE_PENDING, CE.CONNECTED, C.AVAILABLE),
    (C.UPDATE_PENDING, CE.CONNECT_FAILED, C.UNAVAILABLE),
    (C.UPDATE_PENDING, CE.PRODUCER_LOST, C.UNAVAILABLE),
    (C.FINISHING, CE.END_OF_PARTITION_DEQUEUED, C.FINISHED),
}


def as_triples(table: Mapping[tuple[Any, Any], Any]) -> set[tuple[Any, Any, Any]]:
    return {(s, e, t) for (s, e), t in table.items()}


# -- subpartition table --------------------------------------------------------------------


def test_subpartition_table_is_exactly_the_documented_one() -> None:
    assert as_triples(SUBPARTITION_TRANSITIONS) == SUBPARTITION_LEGAL


@pytest.mark.parametrize(("state", "event", "after"), sorted(SUBPARTITION_LEGAL, key=str))
def test_every_legal_subpartition_transition(
    state: SubpartitionState, event: SubpartitionEvent, after: SubpartitionState
) -> None:
    assert next_subpartition_state(state, event) is after


def test_every_other_subpartition_transition_raises() -> None:
    legal = {(s, e) for s, e, _ in SUBPARTITION_LEGAL}
    illegal = [(s, e) for s, e in itertools.product(S, SE) if (s, e) not in legal]
    assert illegal  # e.g. EndOfPartition sent while waiting, release before the end
    for state, event in illegal:
        with pytest.raises(IllegalTransition) as info:
            next_subpartition_state(state, event)
        err = info.value
        assert err.machine == "ResultSubpartition"
        assert err.state is state and err.event is event
        assert state.name in str(err) and event.name in str(err)


def test_subpartition_walk_through_a_failover() -> None:
    state = S.WAITING_FOR_CONSUMER
    for event, expected in [
        (SE.PARTITION_REQUEST, S.AVAILABLE),
        (SE.CONSUMER_FAILED, S.CONSUMER_FAILED),
        (SE.CONSUMER_FAILED, S.CONSUMER_FAILED),  # connection loss, then the coordinator
        (SE.PARTITION_REQUEST, S.AVAILABLE),
        (SE.END_OF_PARTITION_SENT, S.FINISHED),
        (SE.CONSUMER_RELEASED, S.RELEASED),
    ]:
        state = next_subpartition_state(state, event)
        assert state is expected
    with pytest.raises(IllegalTransition, match=r"CONSUMER_RELEASED.*RELEASED"):
        next_subpartition_state(state, SE.CONSUMER_RELEASED)


# -- channel table -------------------------------------------------------------------------


def test_channel_table_is_exactly_the_documented_one() -> None:
    assert as_triples(CHANNEL_TRANSITIONS) == CHANNEL_LEGAL


@pytest.mark.parametrize(("state", "event", "after"), sorted(CHANNEL_LEGAL, key=str))
def test_every_legal_channel_transition(
    state: ChannelState, event: ChannelEvent, after: ChannelState
) -> None:
    assert next_channel_state(state, event) is after


def test_every_other_channel_transition_raises() -> None:
    legal = {(s, e) for s, e, _ in CHANNEL_LEGAL}
    illegal = [(s, e) for s, e in itertools.product(C, CE) if (s, e) not in legal]
    assert (C.FINISHED, CE.PRODUCER_LOST) in illegal  # a loss after the end is no event
    for state, event in illegal:
        with pytest.raises(IllegalTransition) as info:
            next_channel_state(state, event)
        err = info.value
        assert err.machine == "InputChannel"
        assert err.state is state and err.event is event
        assert f"event {event.name} is not allowed in state {state.name}" in str(err)


def test_channel_availability_to_the_task() -> None:
    assert {C.UNAVAILABLE, C.UPDATE_PENDING} == set(C) - AVAILABLE_TO_TASK


def test_channel_walk_through_a_producer_failover() -> None:
    state = C.CONNECTING
    for event, expected in [
        (CE.CONNECTED, C.AVAILABLE),
        (CE.PRODUCER_LOST, C.DRAINING),
        (CE.UNAVAILABLE_DEQUEUED, C.UNAVAILABLE),
        (CE.UPDATE_APPLIED, C.UPDATE_PENDING),
        (CE.CONNECT_FAILED, C.UNAVAILABLE),
        (CE.UPDATE_APPLIED, C.UPDATE_PENDING),
        (CE.CONNECTED, C.AVAILABLE),
        (CE.END_OF_PARTITION_RECEIVED, C.FINISHING),
        (CE.END_OF_PARTITION_DEQUEUED, C.FINISHED),
    ]:
        state = next_channel_state(state, event)
        assert state is expected


def test_transition_helper_is_generic() -> None:
    table = {(S.AVAILABLE, SE.END_OF_PARTITION_SENT): S.FINISHED}
    assert transition("m", table, S.AVAILABLE, SE.END_OF_PARTITION_SENT) is S.FINISHED
    with pytest.raises(IllegalTransition, match=r"^m: event CONSUMER_FAILED is not allowed"):
        transition("m", table, S.AVAILABLE, SE.CONSUMER_FAILED)


# -- loss ledger ---------------------------------------------------------------------------


def test_ledger_loss_after_the_restored_barrier() -> None:
    ledger = LossLedger()
    ledger.on_barrier(3, 10)
    ledger.on_barrier(4, 25)
    ledger.on_consumer_failed(3, repeated=False)
    assert ledger.on_reset(40, new_attempt=True) == 30
    assert ledger.stream_start == 40 and ledger.loss_base is None


def test_ledger_restore_nothing_loses_the_whole_stream() -> None:
    ledger = LossLedger()
    ledger.on_barrier(3, 10)
    ledger.on_consumer_failed(None, repeated=False)
    assert ledger.on_reset(40, new_attempt=True) == 40  # the first consumer's stream began at 0
    ledger.on_consumer_failed(None, repeated=False)
    assert ledger.on_reset(55, new_attempt=True) == 15  # the second one's at its reset (40)


def test_ledger_unknown_or_trimmed_mark_falls_back_to_the_stream_start() -> None:
    ledger = LossLedger()
    ledger.on_barrier(1, 5)
    ledger.on_barrier(2, 8)
    ledger.trim(2)
    assert ledger.barrier_marks == {2: 8}
    ledger.on_consumer_failed(1, repeated=False)
    assert ledger.on_reset(20, new_attempt=True) == 20


def test_ledger_counts_a_record_once_over_repeated_failovers() -> None:
    ledger = LossLedger()
    ledger.on_barrier(3, 10)
    ledger.on_consumer_failed(3, repeated=False)
    assert ledger.on_reset(16, new_attempt=True) == 6
    # The next attempt restores checkpoint 3 as well, and fails too: records
    # 10..16 never reached it (already counted); only what followed its reset is new.
    ledger.on_consumer_failed(3, repeated=False)
    assert ledger.on_reset(20, new_attempt=True) == 4


def test_ledger_repeated_report_refines_only_with_a_checkpoint() -> None:
    ledger = LossLedger()
    ledger.on_barrier(7, 30)
    ledger.on_consumer_failed(None, repeated=False)  # the connection dropped
    ledger.on_consumer_failed(7, repeated=True)  # the coordinator: it restores 7
    ledger.on_consumer_failed(None, repeated=True)  # a late duplicate changes nothing
    assert ledger.loss_base == 30
    assert ledger.on_reset(31, new_attempt=True) == 1


def test_ledger_same_attempt_reconnecting_is_no_failover() -> None:
    ledger = LossLedger()
    ledger.on_consumer_failed(None, repeated=False)
    assert ledger.on_reset(9, new_attempt=False) == 0
    assert ledger.stream_start == 0 and ledger.loss_base is None
    # A newer attempt replacing a live one without a report: it restores nothing.
    assert ledger.on_reset(12, new_attempt=True) == 12
