"""Shared by every test directory: the repository is on ``sys.path``, so tests import the
helper modules of the ``tests`` package (`tests.graphs`, `tests.checkpointing`,
`tests.cli`) whichever directory or file pytest is started with."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
