"""The order join of ``examples.order_join`` as a faust-streaming app (the Faust peer).

One agent reads ``orders``, ``payments`` and ``shipments`` (8 partitions each, keyed
and co-partitioned by order id) as one multi-topic stream, keeps every order's
unmatched pieces in a table with a changelog and a standby replica
(``table_standby_replicas=1``), and sends an ``order_status`` record (the fields of
``examples.order_join.order_status``, ``emitted_at = time.time()`` when sent, plus
``worker``, ``pid`` and ``partition``) to ``order_status_faust`` as soon as an order
has a payment and a shipment inside ``[order.ts + LOWER_MS, order.ts + UPPER_MS]``.

Run a worker (every setting comes from the environment, so that the harness
``bench.peers.faust_run`` can start several)::

    FAUST_JOIN_BROKER=kafka://127.0.0.1:9092 FAUST_JOIN_WORKER=w0 \\
        python -m faust -A bench.peers.faust_join --datadir /tmp/w0 worker --web-port 6066

Environment: ``FAUST_JOIN_BROKER`` (``kafka://host:port``; ``kafka://127.0.0.1:9092``),
``FAUST_JOIN_APP_ID`` (group id and changelog prefix, ``order-join-faust``),
``FAUST_JOIN_STORE`` (``rocksdb://`` or ``memory://``; default ``rocksdb://``),
``FAUST_JOIN_ORDERS`` / ``_PAYMENTS`` / ``_SHIPMENTS`` / ``_OUT`` (topic names),
``FAUST_JOIN_PARTITIONS`` (8), ``FAUST_JOIN_WORKER`` (the ``worker`` field of the
output; default the pid), ``FAUST_JOIN_STATUS`` (a JSON-lines file the worker
appends its partition assignments and rebalance completions to),
``FAUST_JOIN_SESSION_TIMEOUT`` (s, 10), ``FAUST_JOIN_HEARTBEAT`` (s, 3).

**Differences from the streamer job** (Faust has no event time or watermarks):

- An order stays matchable, and its entry stays in the table, until the largest
  event time this worker has seen *on that partition* passes the entry's horizon
  (``order.ts + UPPER_MS``, or the newest piece's ts if later) by
  ``EXPIRY_SLACK_MS``. streamer expires by watermark (min over source partitions
  minus the out-of-orderness bound). A piece that arrives after its entry expired
  starts a new entry and cannot match (streamer: a late record).
  A worker that takes a partition over starts its maximum afresh from the events it
  reads, so expiry there is only delayed, never early.
- Expiry runs inside stream iteration (Faust tables can only be changed there, the
  changelog partition comes from the current event), at most once per second per
  partition, when an event of that partition is processed.
- A completed order's entry is kept (marked ``emitted``) until it expires, as an
  interval join keeps its buffers, so a piece re-read after a failover does not emit
  the order again when the changelog write that marked it had reached Kafka.
- Delivery is Faust's default at-least-once, not exactly-once: offsets are committed
  every 2.8 s (after a producer flush), table writes reach the changelog
  asynchronously, and a taken-over partition is re-read from its last commit. An
  order whose ``emitted`` mark was lost with the killed worker is emitted again (a
  duplicate). A loss would need the mark to reach Kafka without the output: the
  output is handed to aiokafka before the table write (which goes through Faust's
  producer buffer) and aiokafka keeps one request in flight per broker, so with one
  broker that should not happen (reasoned, not proven; none seen).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

try:
    import faust
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise SystemExit(
        f"bench.peers.faust_join needs faust-streaming ({exc}); "
        "install the peers extra: pip install -e '.[peers]'"
    ) from exc

from examples.order_join import LOWER_MS, UPPER_MS, order_status

EXPIRY_SLACK_MS = 2_000  # 4x the generator's disorder bound (DISORDER_MS = 500)
SWEEP_INTERVAL_S = 1.0

_env = os.environ.get
BROKER = _env("FAUST_JOIN_BROKER", "kafka://127.0.0.1:9092")
APP_ID = _env("FAUST_JOIN_APP_ID", "order-join-faust")
STORE = _env("FAUST_JOIN_STORE", "rocksdb://")
PARTITIONS = int(_env("FAUST_JOIN_PARTITIONS", "8"))
ORDERS = _env("FAUST_JOIN_ORDERS", "orders")
PAYMENTS = _env("FAUST_JOIN_PAYMENTS", "payments")
SHIPMENTS = _env("FAUST_JOIN_SHIPMENTS", "shipments")
OUT = _env("FAUST_JOIN_OUT", "order_status_faust")
WORKER = _env("FAUST_JOIN_WORKER") or str(os.getpid())
STATUS_FILE = _env("FAUST_JOIN_STATUS")

app = faust.App(
    APP_ID,
    broker=BROKER,
    store=STORE,
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    table_standby_replicas=1,
    broker_session_timeout=float(_env("FAUST_JOIN_SESSION_TIMEOUT", "10")),
    broker_heartbeat_interval=float(_env("FAUST_JOIN_HEARTBEAT", "3")),
    key_serializer="raw",
    value_serializer="json",
    # the topics are created by whoever runs the benchmark (the broker does not
    # auto-create); Faust still declares its changelog topic itself.
    topic_allow_declare=True,
)

# One multi-topic stream: Faust co-partitions the three topics and the table's
# changelog, so partition p of each is always processed by the same worker.
inputs = app.topic(
    ORDERS, PAYMENTS, SHIPMENTS, partitions=PARTITIONS, key_serializer="raw", value_type=None
)
out_topic = app.topic(OUT, key_serializer="raw", value_serializer="json")

# order id -> {"p": partition, "order": {...} | None, "payments": [...],
#              "shipments": [...], "emitted": bool}
# Keys and values are JSON (Faust's default for tables): str keys in, str keys out,
# with both stores and after changelog recovery.
pending = app.Table("pending", default=None, partitions=PARTITIONS, key_type=str)

_PIECES = {PAYMENTS: "payments", SHIPMENTS: "shipments"}

# In-memory expiry index, per partition: order id -> expire when max ts passes this.
_index: dict[int, dict[str, int]] = {}
_max_ts: dict[int, int] = {}
_last_sweep: dict[int, float] = {}
_stats = {"events": 0, "emitted": 0, "expired": 0}


def _status(event: str, **fields: Any) -> None:
    if not STATUS_FILE:
        return
    record = {"t": time.time(), "event": event, "worker": WORKER, "pid": os.getpid(), **fields}
    with open(STATUS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _horizon(entry: dict[str, Any]) -> int:
    """Event time after which (plus slack) the entry can match nothing more."""
    ts = [e["ts"] for e in entry["payments"]] + [e["ts"] for e in entry["shipments"]]
    if entry["order"] is not None:
        ts.append(entry["order"]["ts"] + UPPER_MS)
    return int(max(ts))


def _inside(order: dict[str, Any], piece: dict[str, Any]) -> bool:
    return bool(order["ts"] + LOWER_MS <= piece["ts"] <= order["ts"] + UPPER_MS)


def _match(entry: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    order = entry["order"]
    if order is None:
        return None
    pay = next((e for e in entry["payments"] if _inside(order, e)), None)
    ship = next((e for e in entry["shipments"] if _inside(order, e)), None)
    if pay is None or ship is None:
        return None
    return pay, ship


def _reindex(partition: int) -> None:
    """Rebuild the expiry index of a partition from the (restored) table."""
    index: dict[str, int] = {}
    for key, entry in pending.items():
        if isinstance(entry, dict) and entry.get("p") == partition:
            index[str(key)] = _horizon(entry)
    _index[partition] = index


def _sweep(partition: int) -> None:
    watermark = _max_ts[partition] - EXPIRY_SLACK_MS
    index = _index[partition]
    for key, horizon in list(index.items()):
        if horizon < watermark:
            del index[key]
            if key in pending:
                del pending[key]
                _stats["expired"] += 1


@app.agent(inputs)
async def join(stream: Any) -> None:
    async for event in stream.events():
        value = event.value
        topic, partition = event.message.topic, event.message.partition
        if partition not in _index:
            _reindex(partition)
        ts = int(value["ts"])
        _max_ts[partition] = max(_max_ts.get(partition, ts), ts)
        _stats["events"] += 1
        oid = str(value["order_id"])
        entry = pending.get(oid)
        if entry is None:
            entry = {
                "p": partition,
                "order": None,
                "payments": [],
                "shipments": [],
                "emitted": False,
            }
        if topic == ORDERS:
            entry["order"] = value
        else:
            entry[_PIECES[topic]].append(value)
        if not entry["emitted"]:
            matched = _match(entry)
            if matched is not None:
                status = order_status(entry["order"], *matched)
                status.update(worker=WORKER, pid=os.getpid(), partition=partition)
                await out_topic.send(key=oid.encode(), value=status)
                entry["emitted"] = True
                _stats["emitted"] += 1
        pending[oid] = entry
        _index[partition][oid] = _horizon(entry)
        now = time.monotonic()
        if now - _last_sweep.get(partition, 0.0) >= SWEEP_INTERVAL_S:
            _last_sweep[partition] = now
            _sweep(partition)


@app.on_partitions_assigned.connect
async def _on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    # Partitions may come back with a different table content: rebuild lazily.
    _index.clear()
    actives = sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == ORDERS)
    standbys = sorted(
        tp.partition
        for tp in app.assignor.assigned_standbys()
        if tp.topic == pending.changelog_topic.get_topic_name()
    )
    _status("assigned", actives=actives, standbys=standbys)


@app.on_partitions_revoked.connect
async def _on_revoked(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    revoked = args[0] if args else kwargs.get("revoked", ())
    _status("revoked", partitions=sorted({tp.partition for tp in revoked if tp.topic == ORDERS}))


@app.on_rebalance_complete.connect
async def _on_rebalance_complete(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
    _status("rebalance_complete")


async def _loop_lag() -> None:
    """Event-loop lag (the worker is one asyncio thread): tells CPU stalls from I/O waits."""
    while True:
        t = time.monotonic()
        await asyncio.sleep(0.05)
        lag = time.monotonic() - t - 0.05
        _stats["max_loop_lag_ms"] = max(_stats.get("max_loop_lag_ms", 0), int(lag * 1000))
        if lag > 0.25:
            _status("loop_lag", lag_s=round(lag, 3))


_cpu_mark = [time.process_time()]


async def _report() -> None:
    cpu = time.process_time()  # CPU seconds this worker used since the last report (5 s)
    _status("stats", **_stats, cpu_s=round(cpu - _cpu_mark[0], 2), partitions=sorted(_max_ts))
    _cpu_mark[0] = cpu
    _stats["max_loop_lag_ms"] = 0


app.task(_loop_lag)
app.timer(5.0)(_report)


if __name__ == "__main__":
    app.main()
