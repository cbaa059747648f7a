"""``CoordinatorClient``: blocking calls to a coordinator, for the CLI, tests and benchmarks.

Each call opens a short-lived control connection in its own event loop, so it
can be used from plain synchronous code (not from inside a running loop).
"""

from __future__ import annotations

import asyncio
from typing import Any

from streamer.rpc.transport import connect
from streamer.security import cluster_secret
from streamer.security.roles import client_credentials
from streamer.security.tls import client_ssl


class CoordinatorClient:
    def __init__(self, address: str, *, timeout: float = 30.0, secret: bytes | None = None) -> None:
        """``secret``: the cluster secret (default: `streamer.security.cluster_secret`)."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            from streamer.errors import ConfigError

            raise ConfigError(f"bad coordinator address {address!r}: expected HOST:PORT")
        self.address = address
        self.host, self.port = host, int(port)
        self.timeout = timeout
        self.credentials = client_credentials(cluster_secret() if secret is None else secret)
        self.ssl = client_ssl()

    def call(self, kind: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            conn = await connect(
                self.host,
                self.port,
                None,
                name="coordinator",
                timeout=5.0,
                credentials=self.credentials,
                ssl=self.ssl,
            )
            try:
                reply = await conn.request(kind, body or {}, timeout=self.timeout)
                return dict(reply.body)
            finally:
                await conn.close(reason="client done")

        return asyncio.run(go())

    def submit(self, job_ref: str, config: dict[str, Any]) -> str:
        return str(self.call("submit_job", {"job_ref": job_ref, "config": config})["job_id"])

    def jobs(self) -> list[dict[str, Any]]:
        return list(self.call("list_jobs")["jobs"])

    def status(self, job_id: str) -> dict[str, Any]:
        return dict(self.call("job_status", {"job_id": job_id})["status"])

    def cancel(self, job_id: str) -> None:
        self.call("cancel_job", {"job_id": job_id})

    def savepoint(self, job_id: str, directory: str, *, stop: bool = False) -> str:
        """Take a savepoint into ``directory`` (under the coordinator's state roots; a relative
        path goes under the first root); returns its path."""
        body = {"job_id": job_id, "directory": directory, "stop": stop}
        return str(self.call("trigger_savepoint", body)["path"])

    def kill_task(self, job_id: str, task: str) -> None:
        self.call("kill_task", {"job_id": job_id, "task": task})
