"""CLI commands that talk to a coordinator: coordinator, submit, jobs, status, cancel, kill-task.

The coordinator address comes from ``--coordinator``, else ``$STREAMER_COORDINATOR``,
else the file ``streamer run`` / ``streamer coordinator`` leave in ``$STREAMER_HOME/run``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import orjson

from streamer.connectors.client_config import read_properties
from streamer.coordinator.settings import validate_settings
from streamer.errors import ConfigError, StreamerError
from streamer.localkafka.jars import streamer_home
from streamer.rpc.client import CoordinatorClient


def address_file() -> Path:
    return streamer_home() / "run" / "coordinator.json"


def remember_address(address: str, status_port: int | None) -> None:
    path = address_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"address": address, "status_port": status_port}))


def coordinator_address(given: str | None) -> str:
    if given:
        return given
    if os.environ.get("STREAMER_COORDINATOR"):
        return os.environ["STREAMER_COORDINATOR"]
    try:
        return str(orjson.loads(address_file().read_bytes())["address"])
    except (OSError, ValueError, KeyError):
        raise ConfigError(
            "no coordinator given: pass --coordinator HOST:PORT or set STREAMER_COORDINATOR"
        ) from None


def client(args: argparse.Namespace) -> CoordinatorClient:
    return CoordinatorClient(coordinator_address(args.coordinator))


def parse_settings(pairs: list[str], what: str) -> dict[str, Any]:
    """``key=value`` pairs; values that parse as JSON (numbers, true, lists) are typed."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"bad {what} {pair!r}: expected key=value")
        try:
            out[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            out[key] = value
    return out


def add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("job", metavar="MODULE:JOB", help="job by reference, e.g. my_jobs.orders:job")
    p.add_argument("--strategy", choices=("full", "region", "individual"), default="individual")
    p.add_argument("--bootstrap-servers", help="Kafka bootstrap servers")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="librdkafka settings for every Kafka client of the job (key=value "
                        "lines, e.g. security.protocol=SASL_SSL); see the README")  # fmt: skip
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="job parameter, passed to the job function (repeatable)")  # fmt: skip
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="job setting, e.g. checkpoint_interval=5 (repeatable)")  # fmt: skip
    p.add_argument("--from-savepoint", metavar="PATH",
                   help="start from this savepoint (any parallelism), under a state root "
                        "of the coordinator; relative: under its first")  # fmt: skip


def job_config(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    config: dict[str, Any] = {"strategy": args.strategy, "bootstrap_servers": bootstrap}
    config.update(parse_settings(args.settings, "setting"))
    if args.kafka_config:
        config["kafka_config"] = {**read_properties(args.kafka_config),
                                  **config.get("kafka_config", {})}  # fmt: skip
    config["params"] = {k: str(v) for k, v in parse_settings(args.param, "param").items()}
    if args.from_savepoint:
        # relative: under the coordinator's first state root, so it is sent as given
        path = Path(args.from_savepoint)
        if path.is_absolute() and not (path / "_metadata.json").is_file():
            raise ConfigError(f"{path} is not a savepoint (no _metadata.json in it)")
        config["from_savepoint"] = str(path)
    return validate_settings(config)


def add_parsers(sub: Any) -> None:
    from streamer.coordinator.__main__ import add_arguments

    p = sub.add_parser("coordinator", help="run a coordinator (multi-host deployments)")
    add_arguments(p)
    p.set_defaults(func=cmd_coordinator)

    p = sub.add_parser("submit", help="submit a job to a running coordinator")
    add_job_options(p)
    p.add_argument("--coordinator", help="HOST:PORT")
    p.add_argument("--no-broker-check", action="store_true",
                   help="submit without checking first that Kafka answers here")  # fmt: skip
    p.set_defaults(func=cmd_submit)

    for name, func, helptext in (
        ("jobs", cmd_jobs, "list jobs"),
        ("status", cmd_status, "print a job's status as JSON"),
        ("cancel", cmd_cancel, "cancel a job"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name != "jobs":
            p.add_argument("job_id")
        p.add_argument("--coordinator", help="HOST:PORT")
        p.set_defaults(func=func)

    p = sub.add_parser("savepoint", help="take a savepoint of a running job")
    p.add_argument("job_id")
    p.add_argument("--dir", help="where to write it, under a state root of the coordinator; "
                   "relative: under its first (default: savepoints/<job>-<time>)")  # fmt: skip
    p.add_argument("--stop", action="store_true", help="stop the job after the savepoint")
    p.add_argument("--coordinator", help="HOST:PORT")
    p.set_defaults(func=cmd_savepoint)

    p = sub.add_parser(
        "status-token",
        help="print the token of status servers bound beyond "
        "loopback (dashboard: http://HOST:PORT/?token=...; Prometheus: bearer)",
    )
    p.set_defaults(func=cmd_status_token)

    p = sub.add_parser("kill-task", help="fault injection: SIGKILL one task process")
    p.add_argument("job_id")
    p.add_argument("vertex")
    p.add_argument("subtask", type=int)
    p.add_argument("--coordinator", help="HOST:PORT")
    p.set_defaults(func=cmd_kill_task)


def cmd_coordinator(args: argparse.Namespace) -> int:
    import logging

    from streamer.coordinator.__main__ import run_coordinator

    logging.getLogger().setLevel(logging.INFO)
    return run_coordinator(args)


def cmd_submit(args: argparse.Namespace) -> int:
    if not args.bootstrap_servers:
        raise ConfigError("submit needs --bootstrap-servers (the job's Kafka cluster)")
    config = job_config(args, args.bootstrap_servers)
    if not args.no_broker_check:  # a dead broker is refused here, not after failovers
        from streamer.connectors.client_config import client_config
        from streamer.connectors.health import probe

        hint = (
            "check that the broker runs and --bootstrap-servers is right, or pass "
            "--no-broker-check when only the workers can reach it"
        )
        settings = client_config(args.bootstrap_servers, kafka_config=config.get("kafka_config"))
        probe(args.bootstrap_servers, 15.0, settings, hint, security_hint="check --kafka-config")
    job_id = client(args).submit(args.job, config)
    print(job_id)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    jobs = client(args).jobs()
    if not jobs:
        print("no jobs")
    for j in jobs:
        reason = f"  ({j['failure_reason']})" if j.get("failure_reason") else ""
        print(
            f"{j['job_id']}  {j['name']:<20} {j['state']:<9} {j['strategy']:<10} "
            f"{j['running']}/{j['tasks']} running  {j['failovers']} failovers{reason}"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = client(args).status(args.job_id)
    sys.stdout.write(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    client(args).cancel(args.job_id)
    print(f"canceled {args.job_id}")
    return 0


def cmd_savepoint(args: argparse.Namespace) -> int:
    import time

    # sent as given: the coordinator takes a relative path under its first state root
    directory = args.dir or f"savepoints/{args.job_id}-{int(time.time())}"
    path = client(args).savepoint(args.job_id, directory, stop=args.stop)
    print(path)
    if args.stop:
        hint = f"streamer run MODULE:JOB --from-savepoint {path}"
        print(f"job {args.job_id} stopped; resume with: {hint}", file=sys.stderr)
    return 0


def cmd_status_token(args: argparse.Namespace) -> int:
    """The status token, derived from this machine's cluster secret (never generated here)."""
    from streamer.security.secret import cluster_secret, derive

    print(derive(cluster_secret(create=False), "status").hex())
    return 0


def cmd_kill_task(args: argparse.Namespace) -> int:
    task = f"{args.vertex}#{args.subtask}"
    try:
        client(args).kill_task(args.job_id, task)
    except StreamerError as exc:
        raise StreamerError(f"could not kill {task}: {exc}") from None
    print(f"killed {task} of {args.job_id} (SIGKILL); `streamer status {args.job_id}` "
          "shows the failover record")  # fmt: skip
    return 0
