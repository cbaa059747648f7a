"""``python -m streamer.coordinator``: run a coordinator until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from typing import Any

from streamer.api.loader import drop_working_directory_from_path
from streamer.coordinator.coordinator import Coordinator, write_ready_file
from streamer.coordinator.status_http import dashboard_url
from streamer.state.roots import STATE_ROOTS_ENV, StateRoots


def add_arguments(parser: Any) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="control-plane bind address")
    parser.add_argument("--port", type=int, default=6123, help="control-plane port (0: free)")
    parser.add_argument("--status-port", type=int, default=8081, help="HTTP status port (0: free)")
    parser.add_argument("--status-host", default="127.0.0.1",
                        help="status server (dashboard, /metrics, JSON) bind address; beyond "
                             "loopback it requires the status token")  # fmt: skip
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument("--heartbeat-timeout", type=float, default=6.0)
    parser.add_argument("--ready-file", help="write the bound addresses here as JSON")
    parser.add_argument("--state-root", action="append", metavar="DIR",
                        help="checkpoints and savepoints must lie under this directory "
                             "(repeatable; relative paths go under the first; default "
                             f"${STATE_ROOTS_ENV}, else $STREAMER_HOME/checkpoints)")  # fmt: skip


def run_coordinator(args: Any) -> int:
    # job modules come from PYTHONPATH or an installed package, never from where
    # the coordinator happened to be started (`python -m` puts that first on sys.path)
    drop_working_directory_from_path()
    if getattr(args, "state_root", None):  # job masters read the roots from the environment
        roots = StateRoots.of(args.state_root)
        os.environ[STATE_ROOTS_ENV] = os.pathsep.join(str(r) for r in roots.roots)
    logging.getLogger(__name__).info("state roots: %s", StateRoots.from_env().describe())

    async def go() -> None:
        coordinator = Coordinator(
            args.host,
            args.port,
            args.status_port,
            heartbeat_interval=args.heartbeat_interval,
            heartbeat_timeout=args.heartbeat_timeout,
            status_host=args.status_host,
        )
        await coordinator.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, coordinator.stop)
        if args.ready_file:
            write_ready_file(args.ready_file, coordinator)
        print(f"coordinator listening on {coordinator.address}", flush=True)
        if coordinator.status is not None:
            status = coordinator.status
            print(f"dashboard: {dashboard_url(status.host, status.port)}", flush=True)
        await coordinator.serve_forever()

    asyncio.run(go())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streamer coordinator")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run_coordinator(args)


if __name__ == "__main__":
    raise SystemExit(main())
