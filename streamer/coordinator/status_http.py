"""The coordinator's JSON status endpoint: a minimal read-only HTTP/1.1 server on asyncio.

``GET /jobs`` (summaries), ``GET /jobs/<job_id>`` (graph, tasks with attempts and
hosts, failover history with timings, per-task metrics), ``GET /workers``.
Anything else is 404; non-GET is 405. One request per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson

log = logging.getLogger(__name__)

Route = Callable[[list[str]], Any]  # path segments -> JSON-able body, or None for 404


class StatusServer:
    def __init__(self, route: Route, host: str = "127.0.0.1", port: int = 0) -> None:
        self.route = route
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, path, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if method != "GET":
                await self._send(writer, 405, {"error": "only GET is supported"})
                return
            parts = [p for p in path.split("?", 1)[0].split("/") if p]
            body = self.route(parts)
            if body is None:
                await self._send(writer, 404, {"error": f"no such resource: {path}"})
            else:
                await self._send(writer, 200, body)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            await self._send(writer, 400, {"error": "bad request"})
        except Exception:
            log.exception("status endpoint failed")
            await self._send(writer, 500, {"error": "internal error"})
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()
                await writer.wait_closed()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, code: int, body: Any) -> None:
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
        data = orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        head = (
            f"HTTP/1.1 {code} {reason.get(code, 'Error')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + data)
            await writer.drain()
