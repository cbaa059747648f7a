"""``streamer kafka start|stop|status``: a detached local broker tracked by a state file."""

from __future__ import annotations

import argparse
import time

from streamer.errors import LocalKafkaError
from streamer.localkafka.broker import (
    BrokerInfo,
    LocalKafka,
    is_our_broker,
    read_state,
    state_file,
    stop_pid,
    write_state,
)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    kafka = sub.add_parser("kafka", help="run a local Apache Kafka broker (KRaft) on 127.0.0.1")
    ksub = kafka.add_subparsers(dest="kafka_command", required=True)
    start = ksub.add_parser("start", help="resolve the jars if needed and start a broker")
    start.add_argument("--port", type=int, help="broker port (default: a free one)")
    start.add_argument("--controller-port", type=int, help="controller port (default: free)")
    start.add_argument("--data-dir", help="data directory (default: under $STREAMER_HOME/run)")
    start.add_argument("--keep-data", action="store_true", help="keep the data on stop")
    start.add_argument("--timeout", type=float, default=90.0, help="start timeout in seconds")
    start.add_argument("--profile", choices=("test", "throughput"), default="test",
                       help="JVM settings: test (C1 only, quick to start; the default) or "
                            "throughput (full JIT, for benchmarks)")  # fmt: skip
    start.add_argument("--sasl-ssl", action="store_true",
                       help="also a SASL_SSL listener (SCRAM-SHA-512, a test CA); prints the "
                            "client settings file for --kafka-config")  # fmt: skip
    start.add_argument("--sasl-ssl-port", type=int,
                       help="port of the SASL_SSL listener (default: a free one)")  # fmt: skip
    start.set_defaults(func=cmd_start)
    stop = ksub.add_parser("stop", help="stop the broker started by `streamer kafka start`")
    stop.add_argument("--keep-data", action="store_true", help="keep its data directory")
    stop.set_defaults(func=cmd_stop)
    status = ksub.add_parser("status", help="show whether the local broker runs")
    status.set_defaults(func=cmd_status)


def cmd_start(args: argparse.Namespace) -> int:
    running = read_state()
    if running is not None and is_our_broker(running):
        raise LocalKafkaError(
            f"a local broker already runs at {running.bootstrap_servers} (pid {running.pid}); "
            "stop it first with `streamer kafka stop`"
        )
    broker = LocalKafka(
        port=args.port,
        controller_port=args.controller_port,
        data_dir=args.data_dir,
        keep_data=args.keep_data,
        start_timeout=args.timeout,
        die_with_parent=False,
        sasl_ssl=args.sasl_ssl,
        sasl_ssl_port=args.sasl_ssl_port,
        profile=args.profile,
    )
    started = time.monotonic()
    bootstrap = broker.start()
    write_state(broker.info())
    print(f"Kafka broker started in {time.monotonic() - started:.1f} s (pid {broker.info().pid})")
    print(f"bootstrap servers: {bootstrap}")
    _print_secured(broker.info())
    return 0


def _print_secured(info: BrokerInfo) -> None:
    if info.sasl_ssl_bootstrap:
        print(f"SASL_SSL (SCRAM-SHA-512) bootstrap servers: {info.sasl_ssl_bootstrap}")
        print(f"client settings: {info.client_properties} (--kafka-config)")


def cmd_stop(args: argparse.Namespace) -> int:
    info = read_state()
    if info is None:
        print("no local broker was started with `streamer kafka start`")
        return 1
    if is_our_broker(info):
        stop_pid(info.pid)
        print(f"stopped Kafka broker pid {info.pid} ({info.bootstrap_servers})")
    else:
        print(f"Kafka broker pid {info.pid} is not running any more")
    if not (args.keep_data or info.keep_data):
        import shutil

        shutil.rmtree(info.data_dir, ignore_errors=True)
    else:
        print(f"kept its data in {info.data_dir}")
    state_file().unlink(missing_ok=True)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = read_state()
    if info is None or not is_our_broker(info):
        print("local Kafka broker: not running")
        return 1
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": info.bootstrap_servers, "log_level": 0})
    try:
        topics = len(admin.list_topics(timeout=5).topics)
        answer = f"answering, {topics} topics"
    except Exception as exc:  # noqa: BLE001 - report any client failure as "not answering"
        answer = f"not answering ({exc})"
    print(f"local Kafka broker: pid {info.pid} at {info.bootstrap_servers}, {answer}")
    print(f"data: {info.data_dir}")
    _print_secured(info)
    return 0
