"""``EventFeeder``: a background thread writing ``{"key", "seq"}`` events at a steady rate.

For fault-injection tests: it remembers how many events each key got, so a
test can check which ``(key, seq)`` pairs reached the output. Keys are
``k0 .. k<keys-1>`` in turn; ``seq`` counts per key from 0.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from streamer.connectors import KafkaSink


class EventFeeder:
    def __init__(self, bootstrap_servers: str, topic: str, *, rate: float = 200.0, keys: int = 64):
        self.sink = KafkaSink(bootstrap_servers, topic, producer_config={"linger.ms": 2})
        self.rate = rate
        self.keys = keys
        self.produced: Counter[str] = Counter()
        self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-feeder", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> EventFeeder:
        self.sink.open()
        self._thread.start()
        return self

    def _run(self) -> None:
        started = time.monotonic()
        try:
            while not self._stop.is_set():
                key = f"k{self.total % self.keys}"
                self.sink.write({"key": key, "seq": self.produced[key]}, key=key)
                self.produced[key] += 1
                self.total += 1
                delay = started + self.total / self.rate - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
            self.sink.prepare_commit(0)
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop()
            self.error = exc

    def stop(self) -> Counter[str]:
        """Stop, make every event durable, and return the events per key."""
        self._stop.set()
        self._thread.join(timeout=30)
        self.sink.close()
        if self.error is not None:
            raise self.error
        return self.produced
