"""What machine a benchmark ran on: every benchmark prints and records it."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str | None:
    """The CPU's model name from ``/proc/cpuinfo``; None where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_info() -> dict[str, Any]:
    """CPU model, core count, Python version and platform."""
    return {
        "cpu": cpu_model() or "unknown",
        "cores": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
