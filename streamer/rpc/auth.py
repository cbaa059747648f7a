"""The handshake of a control-plane connection over asyncio streams.

A thin layer over the sans-io `netlayer.protocol.handshake`: it moves the handshake's
bytes between the socket and the state machine, under a deadline. Both functions
return the bytes that followed the handshake in the last read (the first bytes of
the RPC stream), which the connection feeds to its decoder first.

Threading: the connection's event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from netlayer.protocol.handshake import (
    MAX_HELLO,
    ClientHandshake,
    Credentials,
    HandshakeError,
    KeyLookup,
    ServerHandshake,
)

__all__ = ["client_handshake", "server_handshake"]


async def client_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, credentials: Credentials
) -> bytes:
    """Prove ``credentials`` to the server; raises `HandshakeError` or ``OSError``."""
    hs = ClientHandshake(credentials.key, credentials.identity)
    writer.write(hs.start())
    while not hs.done:
        data = await reader.read(MAX_HELLO)
        if not data:
            raise HandshakeError("the server closed the connection during authentication")
        out = hs.feed(data)
        if out:
            writer.write(out)
    return hs.leftover


async def server_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key_for: KeyLookup
) -> tuple[Mapping[str, Any], bytes]:
    """Authenticate the client; returns its identity and the bytes after the handshake.

    On `HandshakeError` the refusal has been written (the caller closes)."""
    hs = ServerHandshake(key_for)
    while not hs.done:
        data = await reader.read(MAX_HELLO)
        if not data:
            raise HandshakeError("the client closed the connection during authentication")
        try:
            out = hs.feed(data)
        except HandshakeError:
            writer.write(hs.refusal)
            raise
        if out:
            writer.write(out)
    return hs.identity, hs.leftover
