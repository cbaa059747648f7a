"""``SlotPool``: the workers and their task slots (Flink's ResourceManager + SlotPool, small).

Sole owner of every worker's slot count. A slot is *allocated* to a key (a job
id and a task) and released by the same key, so releasing twice, or releasing
a task that never got a slot, changes nothing: the count cannot drift however
a failure, a restart and a job end interleave.

Placement: ``pick(prefer)`` takes the preferred worker when it is alive and has a
free slot (a single-task restart goes back to where the task ran, warm), else
the worker with the most free slots, newer workers first on ties: so a worker
that replaced a lost one gets the tasks of the next restart instead of all of
them staying on the survivors.

Threading: the coordinator's loop only; not thread-safe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from streamer.rpc import RpcConnection


@dataclass
class WorkerInfo:
    """A registered worker; ``used`` is only changed by its ``SlotPool``."""

    worker_id: str
    host: str
    pid: int
    slots: int
    conn: RpcConnection
    used: int = 0
    last_heartbeat: float = field(default_factory=time.monotonic)
    registered_at: float = field(default_factory=time.time)

    @property
    def free(self) -> int:
        return self.slots - self.used


class SlotPool:
    """See the module docstring."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerInfo] = {}
        self._allocations: dict[Hashable, str] = {}  # key -> worker id

    # ---------------------------------------------------------------- workers
    def add(self, worker: WorkerInfo) -> None:
        """Register ``worker`` (a re-registration with the same id replaces it)."""
        self.workers[worker.worker_id] = worker

    def remove(self, worker: WorkerInfo) -> bool:
        """Forget ``worker`` and its allocations; False if it was already gone or replaced."""
        if self.workers.get(worker.worker_id) is not worker:
            return False
        del self.workers[worker.worker_id]
        for key in [k for k, w in self._allocations.items() if w == worker.worker_id]:
            del self._allocations[key]
        return True

    def get(self, worker_id: str | None) -> WorkerInfo | None:
        return self.workers.get(worker_id or "")

    @property
    def free(self) -> int:
        return sum(w.free for w in self.workers.values())

    # ------------------------------------------------------------------ slots
    def pick(self, prefer: str | None = None) -> WorkerInfo | None:
        """The worker the next slot should come from, or None when all are full."""
        preferred = self.workers.get(prefer or "")
        if preferred is not None and preferred.free > 0:
            return preferred
        candidates = [w for w in self.workers.values() if w.free > 0]
        return max(candidates, key=lambda w: (w.free, w.registered_at)) if candidates else None

    def allocate(self, key: Hashable, worker: WorkerInfo) -> None:
        """Take a slot of ``worker`` for ``key`` (releasing any slot ``key`` held)."""
        self.release(key)
        self._allocations[key] = worker.worker_id
        worker.used += 1

    def release(self, key: Hashable) -> None:
        """Give back ``key``'s slot, if it holds one (idempotent)."""
        worker_id = self._allocations.pop(key, None)
        worker = self.workers.get(worker_id or "")
        if worker is not None and worker.used > 0:
            worker.used -= 1

    async def wait_for_slot(
        self, prefer: str | None, timeout: float, wanted: Callable[[], bool]
    ) -> WorkerInfo | None:
        """A worker with a free slot, waiting up to ``timeout`` seconds while ``wanted()``
        (a lost worker may be replaced, a finishing task may free one); None otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            worker = self.pick(prefer)
            if worker is not None or not wanted() or time.monotonic() >= deadline:
                return worker
            await asyncio.sleep(0.1)
