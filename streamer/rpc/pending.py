"""The request side of a control-plane connection, without the connection (sans-io).

`PendingRequests` is the table of requests this side sent that still wait for
their reply: it hands out the ids of every outgoing message, matches an
incoming reply to its request by id (dropping, and logging, a reply nothing
waits for) and fails every waiting request at once when the connection closes.
`check_reply` and `check_reply_kind` apply the registry's reply rules to a
reply received and to a reply about to be sent. `one_line` flattens error
text for an ``error`` reply. None of it touches a socket; the asyncio
transport (`streamer.rpc.transport`) owns one table per connection.

Threading: a table belongs to its connection's event loop and is not
thread-safe (its futures are that loop's).
"""

from __future__ import annotations

import asyncio
import enum
import logging

from streamer.rpc.errors import RpcConnectionLost, RpcProtocolError, RpcRemoteError, RpcSchemaError
from streamer.rpc.messages import ERROR_KIND, Message, Registry

__all__ = [
    "PendingRequests",
    "ReplyMatch",
    "check_reply",
    "check_reply_kind",
    "one_line",
]

# The transport's logger: these records are the transport's, and log settings
# (and tests) select them by that name.
logger = logging.getLogger("streamer.rpc.transport")

_MAX_ERROR_TEXT = 1000


def one_line(text: str, limit: int = _MAX_ERROR_TEXT) -> str:
    """``text`` with all whitespace runs collapsed to one space, cut at ``limit`` chars."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class ReplyMatch(enum.Enum):
    """What `PendingRequests.resolve` did with a reply."""

    MATCHED = "matched"
    """It completed the request waiting for it."""
    LATE = "late"
    """Its id was issued here but nothing waits for it any more (timed out,
    cancelled, already answered, or failed by `PendingRequests.fail_all`)."""
    UNKNOWN = "unknown"
    """It answers an id this side never issued."""


class PendingRequests:
    """The requests one connection sent that still wait for their reply, by id.

    Ids: `next_id` numbers every outgoing message of the connection (requests,
    notifications and replies) 1, 2, 3, ..., so a reply to an id never issued
    can be told apart from a late one. A request waits from `expect` until its
    reply arrives (`resolve`), until its sender gives up (`forget`) or until
    the connection closes (`fail_all`).
    """

    def __init__(self) -> None:
        self._last_id = 0
        self._waiting: dict[int, tuple[str, asyncio.Future[Message]]] = {}

    def __len__(self) -> int:
        """How many requests wait for their reply."""
        return len(self._waiting)

    @property
    def last_id(self) -> int:
        """The id `next_id` returned last (0: none yet)."""
        return self._last_id

    def next_id(self) -> int:
        """A fresh id for the next outgoing message."""
        self._last_id += 1
        return self._last_id

    def expect(self, msg_id: int, kind: str) -> asyncio.Future[Message]:
        """Wait for the reply to the request ``msg_id`` (of ``kind``): the future gets it.

        Needs a running event loop (the future is the running loop's).
        """
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = (kind, future)
        return future

    def forget(self, msg_id: int) -> None:
        """Stop waiting for the reply to ``msg_id`` (no-op when it does not wait)."""
        self._waiting.pop(msg_id, None)

    def resolve(self, reply: Message, peer: str) -> ReplyMatch:
        """Complete the request ``reply`` (from ``peer``) answers, if it still waits.

        A reply nothing waits for is dropped: logged at debug when `LATE`
        (`ReplyMatch`), with a warning when `UNKNOWN`.
        """
        entry = self._waiting.get(reply.reply_to)
        if entry is not None and not entry[1].done():
            entry[1].set_result(reply)
            return ReplyMatch.MATCHED
        if reply.reply_to <= self._last_id:
            logger.debug(
                "dropping late %s from %s to request #%d (timed out or cancelled)",
                reply.kind,
                peer,
                reply.reply_to,
            )
            return ReplyMatch.LATE
        logger.warning(
            "dropping %s from %s: reply to unknown request #%d", reply.kind, peer, reply.reply_to
        )
        return ReplyMatch.UNKNOWN

    def fail_all(self, peer: str, reason: str) -> int:
        """Fail every waiting request with `RpcConnectionLost` and empty the table.

        The error names ``peer``, the request and ``reason``. Returns how many
        requests were failed.
        """
        waiting, self._waiting = self._waiting, {}
        failed = 0
        for msg_id, (kind, future) in waiting.items():
            if not future.done():
                future.set_exception(
                    RpcConnectionLost(
                        f"rpc connection to {peer} closed while {kind} #{msg_id} "
                        f"waited for its reply: {reason}"
                    )
                )
                failed += 1
        return failed


def check_reply(registry: Registry, peer: str, kind: str, msg_id: int, reply: Message) -> Message:
    """``reply`` (from ``peer`` to the request ``kind`` #``msg_id``), if it is a success.

    Raises `RpcRemoteError` for an ``error`` reply and `RpcProtocolError`
    when ``registry`` lists reply kinds for ``kind`` and ``reply.kind`` is not
    one of them.
    """
    if reply.kind == ERROR_KIND:
        raise RpcRemoteError(str(reply.body["message"]), peer=peer, kind=kind)
    spec = registry.get(kind)
    if spec is not None and spec.replies and reply.kind not in spec.replies:
        raise RpcProtocolError(
            f"{peer} answered {kind} #{msg_id} with {reply.kind}, "
            f"expected {' or '.join(sorted(spec.replies))}"
        )
    return reply


def check_reply_kind(registry: Registry, request_kind: str, kind: str) -> None:
    """Raise `RpcSchemaError` when ``kind`` may not answer a ``request_kind`` request.

    ``error`` answers anything; otherwise ``kind`` must be one of the reply
    kinds ``registry`` lists for ``request_kind`` (when it lists any).
    """
    if kind == ERROR_KIND:
        return
    spec = registry.get(request_kind)
    if spec is not None and spec.replies and kind not in spec.replies:
        raise RpcSchemaError(
            kind, None, f"not a reply to {request_kind} (expected {sorted(spec.replies)})"
        )
