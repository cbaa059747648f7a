"""Headless chromium for the dashboard test (``tests/e2e/test_dashboard.py``).

Playwright (a test dependency) drives the browser, but its own browser download is
not used: the test runs Debian's ``chromium``. ``ensure_chromium`` finds it
(``$STREAMER_CHROMIUM``, then ``chromium`` / ``chromium-browser`` on ``PATH``), or
installs Debian's package with apt-get when run as root on Debian or Ubuntu (what
``make test`` and CI do); elsewhere it says why there is none, and the test is
skipped with that reason.

    python -m scripts.browser     # find or install it; prints the path
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PACKAGE = "chromium"


class NoBrowser(Exception):
    """No chromium here, and none can be installed; the message says why."""


def find_chromium() -> str | None:
    given = os.environ.get("STREAMER_CHROMIUM")
    if given:
        return given if Path(given).is_file() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _debian_like() -> bool:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return False
    return any(word in text for word in ("ID=debian", "ID=ubuntu", "ID_LIKE=debian"))


def ensure_chromium() -> tuple[str, str]:
    """``(path, what was done)``; ``NoBrowser`` with the reason when there is none."""
    found = find_chromium()
    if found:
        return found, f"chromium at {found}"
    if os.geteuid() != 0:
        raise NoBrowser("no chromium, and installing Debian's needs root")
    if shutil.which("apt-get") is None or not _debian_like():
        raise NoBrowser("no chromium, and this machine is not Debian or Ubuntu (apt-get)")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", PACKAGE]  # with recommends: fonts for screenshots
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:  # an old package list: update it once and try again
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    found = find_chromium()
    if proc.returncode != 0 or found is None:
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
        raise NoBrowser(f"apt-get install {PACKAGE} failed: {(lines or ['?'])[-1].strip()[:200]}")
    return found, f"installed {PACKAGE} with apt-get in {time.monotonic() - started:.0f} s"


def prepare_test_environment() -> str:
    """For ``make test``: find or install chromium and tell the tests through the
    environment (``STREAMER_CHROMIUM``; ``STREAMER_REQUIRE_BROWSER=1`` so that the
    dashboard test fails rather than skips). Returns what happened, for the report."""
    try:
        path, note = ensure_chromium()
    except NoBrowser as exc:
        return f"none, the dashboard test is skipped: {exc}"
    os.environ["STREAMER_CHROMIUM"] = path
    os.environ["STREAMER_REQUIRE_BROWSER"] = "1"
    return note


def main() -> int:
    try:
        path, note = ensure_chromium()
    except NoBrowser as exc:
        print(f"no browser: {exc}", file=sys.stderr)
        return 1
    print(note)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
