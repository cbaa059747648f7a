"""Running the ``streamer`` command line as a subprocess, for tests."""

from __future__ import annotations

import os
import subprocess
import sys


def streamer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m streamer.cli ARGS`` with this environment (or ``env``); 180 s at most."""
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args],
        capture_output=True,
        text=True,
        env=env or dict(os.environ),
        timeout=180,
    )
