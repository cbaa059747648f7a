"""Protocol errors raised by the sans-io codec.

A `ProtocolError` means the byte stream cannot be trusted any more: the
transport logs the reason and closes the connection (never retries the frame).
"""

from __future__ import annotations

__all__ = ["FrameTooLarge", "ProtocolError"]


class ProtocolError(Exception):
    """The peer sent bytes that are not a valid frame sequence (or broke the protocol)."""


class FrameTooLarge(ProtocolError):
    """A frame header announced more bytes than the configured maximum frame size."""
