"""The status server's bind address and authentication, against real coordinator
processes: on loopback it is open; bound beyond loopback (0.0.0.0 here) every request
needs the status token, derived from the cluster secret, as a bearer header or as the
cookie a browser gets from ``/?token=``; the coordinator prints that URL."""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.security.secret import derive

REPO = Path(__file__).resolve().parents[2]


class Coordinator:
    """``python -m streamer.coordinator`` with free ports; stopped by its pid."""

    def __init__(self, tmp: Path, secret: str, *extra: str) -> None:
        ready = tmp / "ready.json"
        env = {**os.environ, "STREAMER_CLUSTER_SECRET": secret, "STREAMER_HOME": str(tmp)}
        self.log = tmp / "coordinator.out"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streamer.coordinator", "--port", "0",
                 "--status-port", "0", "--ready-file", str(ready), *extra],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                cwd=REPO,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not ready.exists() or b"dashboard:" not in self.log.read_bytes():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"no coordinator: {self.log.read_text()}"
            time.sleep(0.05)
        self.status_port = int(orjson.loads(ready.read_bytes())["status_port"])

    def dashboard_line(self) -> str:
        return next(ln for ln in self.log.read_text().splitlines() if ln.startswith("dashboard:"))

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.status_port, timeout=10)
        try:
            conn.request("GET", path, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def secret() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def open_to_all(tmp_path: Path, secret: str) -> Iterator[Coordinator]:
    c = Coordinator(tmp_path, secret, "--status-host", "0.0.0.0")
    yield c
    c.stop()


def test_beyond_loopback_every_request_needs_the_status_token(
    open_to_all: Coordinator, secret: str
) -> None:
    c = open_to_all
    token = derive(bytes.fromhex(secret), "status").hex()
    for path in ("/jobs", "/workers", "/metrics", "/", "/static/app.js", "/jobs/job-1"):
        for headers in (
            {},
            {"Authorization": "Bearer " + "0" * 64},
            {"Authorization": f"Basic {token}"},
            {"Cookie": "streamer_status_token=nope"},
            {"Authorization": "Bearer caf\u00e9"},  # not ASCII: refused like any other
        ):
            code, resp_headers, body = c.get(path, headers)
            assert code == 401, (path, headers)
            assert orjson.loads(body) == {
                "error": "authentication required: the status token (see the docs)"
            }
            assert resp_headers["WWW-Authenticate"] == 'Bearer realm="streamer"'
        code, _, _ = c.get(path + "?token=" + "1" * 64)
        assert code == 401

    bearer = {"Authorization": f"Bearer {token}"}
    code, _, body = c.get("/jobs", bearer)
    assert (code, orjson.loads(body)) == (200, [])
    code, headers, body = c.get("/metrics", bearer)
    assert code == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    code, headers, body = c.get("/", bearer)
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert b"<title>streamer dashboard</title>" in body

    # a browser: the URL with the token once, then the cookie it set
    code, headers, body = c.get(f"/?token={token}")
    assert (code, headers["Location"], body) == (303, "/", b"")
    cookie = headers["Set-Cookie"]
    assert cookie == f"streamer_status_token={token}; Path=/; HttpOnly; SameSite=Strict"
    code, _, body = c.get("/", {"Cookie": cookie.split(";")[0]})
    assert code == 200 and b"/static/app.js" in body
    code, _, body = c.get("/static/app.js", {"Cookie": cookie.split(";")[0]})
    assert code == 200 and b"function poll()" in body

    # the coordinator prints the URL to open
    line = c.dashboard_line()
    assert line.startswith("dashboard: http://")
    assert line.endswith(f":{c.status_port}/?token={token}")
    # and `streamer status-token` tells it to whoever holds the secret
    cli = str(Path(sys.executable).with_name("streamer"))
    env = {**os.environ, "STREAMER_CLUSTER_SECRET": secret}
    out = subprocess.run([cli, "status-token"], env=env, capture_output=True, text=True, check=True)
    assert out.stdout == token + "\n"


def test_on_loopback_the_status_server_is_open(tmp_path: Path, secret: str) -> None:
    c = Coordinator(tmp_path, secret)  # default --status-host 127.0.0.1
    try:
        code, _, body = c.get("/jobs")
        assert (code, orjson.loads(body)) == (200, [])
        assert c.get("/metrics")[0] == 200
        assert c.dashboard_line() == f"dashboard: http://127.0.0.1:{c.status_port}/"
    finally:
        c.stop()
