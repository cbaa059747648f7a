"""Explicit state machines as data, h11 style: a table ``(state, event) -> new state``.

Each machine is a pure module (no asyncio, no sockets, no clocks) with an enum
of states, an enum of events and a `Transitions` dict; the object that owns
the state asks `transition` for the next state and stores it. A pair missing
from the table is a bug in the caller and raises `IllegalTransition`, naming
the machine, the state and the event. Transitions happen on connection and
failure events, never per record.

Everything here is immutable or pure, safe to share between threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

__all__ = ["IllegalTransition", "Transitions", "transition"]

S = TypeVar("S", bound=Enum)
E = TypeVar("E", bound=Enum)

Transitions = Mapping[tuple[S, E], S]
"""A machine's table: ``{(state, event): new_state}``; anything missing is illegal."""


class IllegalTransition(RuntimeError):
    """``event`` is not allowed in ``state`` of ``machine`` (a bug in the caller)."""

    def __init__(self, machine: str, state: Enum, event: Enum) -> None:
        super().__init__(f"{machine}: event {event.name} is not allowed in state {state.name}")
        self.machine = machine
        self.state = state
        self.event = event


def transition(machine: str, table: Transitions[S, E], state: S, event: E) -> S:
    """The state after ``event`` in ``state``; `IllegalTransition` if the table has no entry."""
    try:
        return table[state, event]
    except KeyError:
        raise IllegalTransition(machine, state, event) from None
