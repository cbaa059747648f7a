"""``WatermarkOutput``: where a task's event time goes once it moved.

``advance(wm)`` lets the operators expire state by time, then sends
``Watermark(wm)`` to every consumer; ``send_idle()`` tells the consumers this
task went idle (an idle marker is not a time for the task's own operators).
Sources (``SourceRunner``) and input tasks (``InputProcessor``) both use it.

Threading: the task's loop only. Ordering: the watermark follows every record
emitted before the call on every subpartition.
"""

from __future__ import annotations

from collections.abc import Sequence

from netlayer.events import Watermark
from netlayer.partition import RecordWriter
from streamer.runtime.eventtime import IDLE_WATERMARK
from streamer.runtime.operators import ChainedOperator


class WatermarkOutput:
    def __init__(
        self, operators: Sequence[ChainedOperator], writers: Sequence[RecordWriter]
    ) -> None:
        self.operators = operators
        self.writers = writers
        self.current: int | None = None
        """The last watermark advanced to (None: none yet)."""

    def advance(self, wm: int) -> None:
        """Event time moved to ``wm``: operators expire state, then the watermark goes on."""
        self.current = wm
        for op in self.operators:
            op.on_watermark(wm)
        event = Watermark(wm)
        for writer in self.writers:
            writer.broadcast_event(event)

    def send_idle(self) -> None:
        """An idle marker goes to consumers only; it is not a time for our operators."""
        event = Watermark(IDLE_WATERMARK)
        for writer in self.writers:
            writer.broadcast_event(event)
