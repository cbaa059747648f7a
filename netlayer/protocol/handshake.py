"""Sans-io challenge-response handshake: the first bytes of every connection.

Both planes (the control-plane RPC and the data plane) run it before any other
frame is accepted. The key is never sent; each side proves it holds the key for
the identity the client claims, and nonces from both sides make every proof
single-use::

    client -> server  HELLO     magic:4 "SAUT" | version:u8 | nonce_c:32 | len:u16 | identity
    server -> client  CHALLENGE type:u8 = 1 | nonce_s:32 | proof_s:32
                      or RESULT (a refusal before any proof)
    client -> server  PROOF     proof_c:32
    server -> client  RESULT    type:u8 = 2 | ok:u8 | len:u8 | reason (UTF-8)

``identity`` is a small JSON object (``{"role": "worker", "id": "w1"}``), at most
`MAX_IDENTITY` bytes. ``proof_s = HMAC(key, "server" | nonce_c | nonce_s | identity)``
and ``proof_c`` the same with ``"client"``. The server finds the key for an identity
with its ``key_for`` callback; ``None`` refuses it. The client checks ``proof_s``
before it sends its own proof, so a fake server learns nothing it can replay.

Nothing before authentication can make a peer buffer more than
`MAX_HELLO` bytes: that is the small pre-authentication frame limit.

Ordering: after ``done``, the bytes that followed the handshake in the same read
are in ``leftover``; the transport feeds them to the normal decoder.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from netlayer.protocol.errors import ProtocolError

__all__ = [
    "MAX_HELLO",
    "MAX_IDENTITY",
    "TOKEN_SIZE",
    "ClientHandshake",
    "Credentials",
    "HandshakeError",
    "KeyLookup",
    "ServerHandshake",
    "consumer_token",
]

MAGIC = b"SAUT"
VERSION = 1
NONCE = 32
PROOF = 32
MAX_IDENTITY = 512
MAX_HELLO = len(MAGIC) + 1 + NONCE + 2 + MAX_IDENTITY
_CHALLENGE, _RESULT = 1, 2
_HELLO_HEAD = struct.Struct(f">4sB{NONCE}sH")
TOKEN_SIZE = 16

KeyLookup = Callable[[Mapping[str, Any]], bytes | None]
"""The server's key for a claimed identity, or None to refuse it."""


class HandshakeError(ProtocolError):
    """The handshake failed: refused, a wrong key, or bytes that are not a handshake."""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a connecting side proves: ``key`` for the claimed ``identity``."""

    key: bytes = field(repr=False)
    identity: Mapping[str, Any]


def consumer_token(key: bytes, partition_id: str, subpartition: int, attempt: int) -> bytes:
    """The per-attempt token a consumer attempt sends in its partition request.

    Only a holder of the job's data ``key`` can make it, and it is good for one
    subpartition and one consumer attempt: a request for another subpartition, or
    under an attempt number the holder was not given, does not verify.
    """
    label = f"consume\0{partition_id}\0{subpartition}\0{attempt}".encode()
    return hmac.new(key, label, hashlib.sha256).digest()[:TOKEN_SIZE]


def _proof(key: bytes, side: bytes, nonce_c: bytes, nonce_s: bytes, identity: bytes) -> bytes:
    return hmac.new(key, side + nonce_c + nonce_s + identity, hashlib.sha256).digest()


def _result(ok: bool, reason: str) -> bytes:
    text = reason.encode()[:255]
    return bytes([_RESULT, 1 if ok else 0, len(text)]) + text


class ClientHandshake:
    """The connecting side. ``start()`` gives the HELLO; ``feed`` the server's bytes."""

    def __init__(self, key: bytes, identity: Mapping[str, Any]) -> None:
        self._key = key
        self._identity = json.dumps(dict(identity), sort_keys=True).encode()
        if len(self._identity) > MAX_IDENTITY:
            raise ValueError(f"identity of {len(self._identity)} bytes > {MAX_IDENTITY}")
        self._nonce = os.urandom(NONCE)
        self._buf = bytearray()
        self._proved = False
        self.done = False
        self.leftover = b""

    def start(self) -> bytes:
        return _HELLO_HEAD.pack(MAGIC, VERSION, self._nonce, len(self._identity)) + self._identity

    def feed(self, data: bytes) -> bytes:
        """Bytes from the server; returns the bytes to send (maybe none).

        Raises `HandshakeError` when the server refuses or cannot prove the key."""
        self._buf += data
        if not self._proved:
            if len(self._buf) < 1:
                return b""
            if self._buf[0] == _RESULT:
                self._read_result()  # refused before any proof: raises
                return b""
            if self._buf[0] != _CHALLENGE:
                raise HandshakeError("the peer does not speak the authentication handshake")
            if len(self._buf) < 1 + NONCE + PROOF:
                return b""
            nonce_s = bytes(self._buf[1 : 1 + NONCE])
            proof_s = bytes(self._buf[1 + NONCE : 1 + NONCE + PROOF])
            del self._buf[: 1 + NONCE + PROOF]
            want = _proof(self._key, b"server", self._nonce, nonce_s, self._identity)
            if not hmac.compare_digest(want, proof_s):
                raise HandshakeError(
                    "the server could not prove it holds the cluster secret "
                    "(a different cluster, or a different secret file)"
                )
            self._proved = True
            reply = _proof(self._key, b"client", self._nonce, nonce_s, self._identity)
            self._read_result()
            return reply
        self._read_result()
        return b""

    def _read_result(self) -> None:
        if len(self._buf) < 3 or len(self._buf) < 3 + self._buf[2]:
            return
        if self._buf[0] != _RESULT:
            raise HandshakeError("the peer broke the authentication handshake")
        ok, n = self._buf[1], self._buf[2]
        reason = bytes(self._buf[3 : 3 + n]).decode(errors="replace")
        self.leftover = bytes(self._buf[3 + n :])
        self._buf.clear()
        if not ok:
            raise HandshakeError(f"authentication refused: {reason}")
        self.done = True


class ServerHandshake:
    """The accepting side: ``feed`` the client's bytes, send what it returns.

    After ``done``, ``identity`` is the authenticated identity. A failure raises
    `HandshakeError`; ``refusal`` then holds a RESULT frame the transport may send
    before closing (it says only "authentication failed", never why)."""

    def __init__(self, key_for: KeyLookup) -> None:
        self._key_for = key_for
        self._buf = bytearray()
        self._key: bytes | None = None
        self._nonce_c = b""
        self._nonce_s = b""
        self._raw_identity = b""
        self.identity: dict[str, Any] = {}
        self.done = False
        self.leftover = b""
        self.refusal = _result(False, "authentication failed")

    def feed(self, data: bytes) -> bytes:
        self._buf += data
        if self._key is None:
            return self._on_hello()
        if len(self._buf) < PROOF:
            return b""
        proof_c = bytes(self._buf[:PROOF])
        self.leftover = bytes(self._buf[PROOF:])
        self._buf.clear()
        want = _proof(self._key, b"client", self._nonce_c, self._nonce_s, self._raw_identity)
        if not hmac.compare_digest(want, proof_c):
            raise HandshakeError(f"wrong proof for {self._describe()}")
        self.done = True
        return _result(True, "")

    def _on_hello(self) -> bytes:
        head = _HELLO_HEAD.size
        if len(self._buf) >= 4 and bytes(self._buf[:4]) != MAGIC:
            raise HandshakeError("not an authentication handshake (bad magic)")
        if len(self._buf) < head:
            return b""
        _, version, nonce_c, n = _HELLO_HEAD.unpack_from(self._buf)
        if version != VERSION:
            raise HandshakeError(f"handshake version {version}, expected {VERSION}")
        if n > MAX_IDENTITY:
            raise HandshakeError(f"identity of {n} bytes > {MAX_IDENTITY}")
        if len(self._buf) < head + n:
            return b""
        raw = bytes(self._buf[head : head + n])
        del self._buf[: head + n]
        try:
            identity = json.loads(raw)
        except ValueError:
            raise HandshakeError("identity is not JSON") from None
        if not isinstance(identity, dict):
            raise HandshakeError("identity is not a JSON object")
        self.identity, self._raw_identity, self._nonce_c = identity, raw, nonce_c
        key = self._key_for(identity)
        if key is None:
            raise HandshakeError(f"unknown identity {self._describe()}")
        self._key = key
        self._nonce_s = os.urandom(NONCE)
        proof_s = _proof(key, b"server", nonce_c, self._nonce_s, raw)
        return bytes([_CHALLENGE]) + self._nonce_s + proof_s

    def _describe(self) -> str:
        return json.dumps(self.identity, sort_keys=True)[:120]
