"""The coordinator's status server: JSON, Prometheus metrics and the dashboard, over HTTP.

A minimal read-only HTTP/1.1 server on asyncio, one request per connection:

- ``GET /jobs`` (summaries), ``GET /jobs/<job_id>`` (graph, tasks with attempts and
  hosts, failover history with timings, per-task metrics), ``GET /workers``: JSON
  from the coordinator's ``route``;
- ``GET /metrics``: Prometheus text format (``streamer.coordinator.metrics``);
- ``GET /`` and ``GET /static/<file>``: the live dashboard (``streamer/web``).

Anything else is 404; non-GET is 405.

**Authentication.** Bound to a loopback address (the default, 127.0.0.1) the server
is open, like the rest of a local cluster. Bound to any other address it answers
only requests that carry the status token, ``status_token()``: a key derived from
the cluster secret (``derive(secret, "status")``, hex). Scrapers send
``Authorization: Bearer <token>``; a browser opens ``/?token=<token>`` once, which
sets an HttpOnly cookie and redirects to the same page without the token. Anything
else gets 401 and no data. At start the server logs its URL (with the token when
one is needed): ``dashboard_url``.

Threading: the coordinator's loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import socket
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import orjson

from streamer.coordinator.metrics import metrics_registry, render

log = logging.getLogger(__name__)

Route = Callable[[list[str]], Any]  # path segments -> JSON-able body, or None for 404

COOKIE = "streamer_status_token"
STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
REASONS = {
    200: "OK",
    303: "See Other",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def status_token() -> str:
    """The status server's token: derived from the cluster secret (hex)."""
    from streamer.security.secret import cluster_secret, derive

    return derive(cluster_secret(), "status").hex()


def dashboard_url(host: str, port: int, path: str = "/") -> str:
    """The URL of ``path`` on a status server bound to ``host``, with the token when the
    server needs one (a wildcard bind is shown with this machine's host name)."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    url = f"http://{shown}:{port}{path}"
    return url if is_loopback(host) else f"{url}?token={status_token()}"


def bearer_headers(host: str) -> dict[str, str]:
    """Headers a client of a status server bound to ``host`` sends (the token if needed)."""
    return {} if is_loopback(host) else {"Authorization": f"Bearer {status_token()}"}


class Request:
    """The parts of a request head the server uses."""

    def __init__(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        self.method, target, *_ = lines[0].split(" ")
        self.path, _, query = target.partition("?")
        self.query = {k: v[0] for k, v in parse_qs(query).items()}
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                self.headers[name.strip().lower()] = value.strip()

    def credentials(self) -> list[str]:
        """Every token the request offers: bearer header, cookie, ``?token=``."""
        found = []
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            found.append(token.strip())
        for part in self.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and value:
                found.append(value)
        if self.query.get("token"):
            found.append(self.query["token"])
        return found


class StatusServer:
    """Serves ``route``'s JSON, ``/metrics`` and the dashboard on ``host:port``.

    ``require_auth``: None (default) requires the status token exactly when ``host``
    is not a loopback address (see the module docstring)."""

    def __init__(
        self,
        route: Route,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        require_auth: bool | None = None,
    ) -> None:
        self.route = route
        self.host = host
        self.port = port
        self.require_auth = not is_loopback(host) if require_auth is None else require_auth
        self.registry = metrics_registry(route)
        self._token: str | None = None
        self._server: asyncio.Server | None = None
        self._static: dict[str, bytes] = {}

    async def start(self) -> int:
        """Listen; returns the port. Fails (``SecretError``) if a token is needed and
        there is no cluster secret."""
        if self.require_auth:
            self._token = status_token()
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.require_auth:
            log.info(
                "status server on %s:%d requires the status token; dashboard: %s",
                self.host,
                self.port,
                dashboard_url(self.host, self.port),
            )
        else:
            log.info("dashboard: %s", dashboard_url(self.host, self.port))
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # ------------------------------------------------------------------ requests
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            await self._answer(writer, Request(head))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            await self._json(writer, 400, {"error": "bad request"})
        except Exception:
            log.exception("status endpoint failed")
            await self._json(writer, 500, {"error": "internal error"})
        finally:
            with contextlib.suppress(ConnectionError):
                writer.close()
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, req: Request) -> None:
        if req.method != "GET":
            await self._json(writer, 405, {"error": "only GET is supported"})
            return
        if self._token is not None:
            token = self._token.encode()
            if not any(hmac.compare_digest(c.encode(), token) for c in req.credentials()):
                await self._json(
                    writer,
                    401,
                    {"error": "authentication required: the status token (see the docs)"},
                    extra={"WWW-Authenticate": 'Bearer realm="streamer"'},
                )
                return
            if "token" in req.query:  # a browser's first visit: keep it in a cookie
                cookie = f"{COOKIE}={self._token}; Path=/; HttpOnly; SameSite=Strict"
                await self._send(
                    writer, 303, b"", "text/plain", {"Location": req.path, "Set-Cookie": cookie}
                )
                return
        parts = [p for p in req.path.split("/") if p]
        if parts == ["metrics"]:
            body = render(self.registry)
            await self._send(writer, 200, body, "text/plain; version=0.0.4; charset=utf-8")
        elif not parts or (len(parts) == 2 and parts[0] == "static" and parts[1] in STATIC):
            name = parts[1] if parts else "index.html"
            await self._send(writer, 200, self._file(name), STATIC[name])
        else:
            found = self.route(parts)
            if found is None:
                await self._json(writer, 404, {"error": f"no such resource: {req.path}"})
            else:
                await self._json(writer, 200, found)

    def _file(self, name: str) -> bytes:
        if name not in self._static:
            self._static[name] = resources.files("streamer.web").joinpath(name).read_bytes()
        return self._static[name]

    @classmethod
    async def _json(
        cls,
        writer: asyncio.StreamWriter,
        code: int,
        body: Any,
        extra: dict[str, str] | None = None,
    ) -> None:
        data = orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        await cls._send(writer, code, data, "application/json", extra)

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter,
        code: int,
        data: bytes,
        content_type: str,
        extra: dict[str, str] | None = None,
    ) -> None:
        headers = {
            "Content-Type": content_type,
            "Content-Length": str(len(data)),
            "Cache-Control": "no-store",
            "Connection": "close",
            **(extra or {}),
        }
        head = f"HTTP/1.1 {code} {REASONS.get(code, 'Error')}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in headers.items()
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + b"\r\n" + data)
            await writer.drain()
