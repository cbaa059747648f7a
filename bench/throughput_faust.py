"""The Faust peer at a fixed rate, for ``streamer bench throughput``'s join rate search.

The same setup as ``bench.peers.faust_run`` (2 Faust workers of
``bench.peers.faust_join`` as OS processes, RocksDB tables with a changelog and a
standby replica, run-specific topics of 8 partitions, the same order generator
writing at real-time speed), without a kill: ``faust_point(rate, window, seed)``
runs the generator for ``rate * window`` orders, reads the output and returns
``streamer.bench.join_search.evaluate``'s measurements plus the workers' CPU per
order. Every process it starts is stopped by its pid; its topics are deleted.

Needs faust-streaming: ``pip install -e '.[peers]'`` (importing this module raises
``ImportError`` without it, so the benchmark can skip the peer).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.peers.faust_run import (
    PARTITIONS,
    WORKERS,
    FaustPeerError,
    Worker,
    _delete_topics,
    _read_outputs,
    _settled,
    _wait,
    require_faust,
)
from streamer.bench.join_search import evaluate
from streamer.bench.loadgen import OrderFeeder
from streamer.bench.procstat import total_cpu


def faust_point(bootstrap: str, rate: float, window: float, seed: int) -> dict[str, Any]:
    """The Faust peer at ``rate`` orders/s for ``window`` s (see the module docstring)."""
    version = require_faust()
    from examples.order_join import TOPICS, expected_results, generate_events
    from streamer.testing import TopicFactory

    run = uuid.uuid4().hex[:8]
    app_id = f"order-join-faust-{run}"
    names = {t: f"{t}-faust-{run}" for t in TOPICS}
    out_topic = f"order_status_faust-{run}"
    base = Path(tempfile.mkdtemp(prefix="faust-rate-"))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        "PYTHONUNBUFFERED": "1",
        "FAUST_JOIN_BROKER": f"kafka://{bootstrap}",
        "FAUST_JOIN_APP_ID": app_id,
        "FAUST_JOIN_PARTITIONS": str(PARTITIONS),
        "FAUST_JOIN_ORDERS": names["orders"],
        "FAUST_JOIN_PAYMENTS": names["payments"],
        "FAUST_JOIN_SHIPMENTS": names["shipments"],
        "FAUST_JOIN_OUT": out_topic,
    }
    events = generate_events(max(1, int(rate * window)), seed, rate)
    workers = [Worker(f"w{i}", base, env) for i in range(WORKERS)]
    producer: OrderFeeder | None = None
    created: list[str] = []
    try:
        topics = TopicFactory(bootstrap)
        for name in [*names.values(), out_topic]:
            created.append(topics.create(PARTITIONS, name=name))
        for w in workers:
            w.start()
        _wait("both Faust workers to hold partitions", lambda: _settled(workers), 180, workers)
        pids = [w.pid for w in workers]
        cpu0 = total_cpu(pids)
        producer = OrderFeeder(bootstrap, names, events)
        producer.start()
        producer.join(timeout=window + 90)
        if producer.is_alive() or producer.error is not None:
            raise FaustPeerError(f"the generator failed or hung: {producer.error!r}")
        time.sleep(2.0)  # as for streamer: the same grace before the read
        oracle = expected_results(producer.produced)
        records = _read_outputs(bootstrap, out_topic, len(oracle), idle=1.5, timeout=30)
        cpu1 = total_cpu(pids)
        if not all(w.alive() for w in workers):
            raise FaustPeerError(f"a Faust worker died; logs in {base}")
    finally:
        if producer is not None:
            producer.stop_flag.set()
        for w in workers:
            w.stop()
        with contextlib.suppress(Exception):
            _delete_topics(bootstrap, created, app_id)
    point = evaluate(
        rate,
        window,
        oracle,
        producer.last_piece_at,
        ((r["order_id"], r["emitted_at"]) for r, _ in records),
        producer.started_at,
    )
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    point.update(
        system="faust",
        faust_streaming=version,
        cpu_s=cpu,
        cpu_per_order_ms=None if cpu is None else cpu / len(events["orders"]) * 1000,
    )
    shutil.rmtree(base, ignore_errors=True)  # (kept when the run failed: the workers' logs)
    return point
