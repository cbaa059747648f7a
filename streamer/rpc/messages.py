"""Control-plane messages: the `Message` value and the registry of message kinds.

A message is a kind (``"deploy_task"``), an id, the id of the message it
answers (0 when it is not a reply), whether it wants a reply, and a body: a
JSON object whose fields are described by a tiny schema registered per kind.
The registry is the validation engine: a dict of kind -> `KindSpec` (required
fields and their types, optional fields and their types, and the reply kinds
a request of that kind expects). The built-in kinds are declared once, as
dataclasses, in `streamer.rpc.kinds`, which registers them; tools may add
kinds with::

    register("trigger_checkpoint", required={"checkpoint_id": int}, replies=("ok",))

Field types are ``str``, ``int``, ``float``, ``bool``, ``list``, ``dict`` and
``object`` (any JSON value); the names ``"str"`` ... ``"any"`` work too.
``int`` never accepts a ``bool``; ``float`` accepts an ``int`` and
`KindSpec.validate` turns it into a ``float``; ``list`` accepts a tuple on the
sending side. A body with a missing required field, a field of the wrong type
or a field the schema does not know fails with `RpcSchemaError` naming the
kind and the field. The codec checks every body on decode and on encode.

``error`` (body ``{"message": str}``) is the one reply kind every request may
get instead of its declared replies.

Threading: register kinds at import time. The registry is a plain dict, not
guarded by a lock; reading it from several threads is fine, registering
concurrently is not.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from streamer.rpc.errors import RpcSchemaError

__all__ = [
    "ERROR_KIND",
    "REGISTRY",
    "KindSpec",
    "Message",
    "Registry",
    "register",
]

ERROR_KIND = "error"

_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*$")

_TYPE_NAMES: dict[str, type] = {
    "str": str,
    "int": int,
    "float": float,
    "bool": bool,
    "list": list,
    "dict": dict,
    "any": object,
}
_ALLOWED_TYPES = frozenset(_TYPE_NAMES.values())

FieldType = type | str


@dataclass(frozen=True, slots=True)
class Message:
    """One control-plane message.

    ``msg_id`` is unique per sender and connection (> 0). ``reply_to`` is the
    ``msg_id`` of the peer's request this message answers, 0 otherwise.
    ``wants_reply`` marks a request (the sender awaits exactly one reply);
    replies and notifications have it false.
    """

    kind: str
    msg_id: int
    body: dict[str, Any] = field(default_factory=dict)
    reply_to: int = 0
    wants_reply: bool = False


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_type(kind: str, name: str, expected: type, value: Any) -> Any:
    """``value`` (normalized) if it has type ``expected``; else raise `RpcSchemaError`."""
    if expected is object:
        return value
    if expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif expected is float:
        if isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, float)
        if ok and not math.isfinite(value):
            raise RpcSchemaError(kind, name, f"must be a finite float, got {value}")
    elif expected is list:
        ok = isinstance(value, list | tuple)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise RpcSchemaError(kind, name, f"must be {expected.__name__}, got {_type_name(value)}")
    return value


@dataclass(frozen=True, slots=True)
class KindSpec:
    """The schema of one message kind (see the module docstring)."""

    kind: str
    required: Mapping[str, type]
    optional: Mapping[str, type]
    replies: frozenset[str]

    def validate(self, body: Any) -> dict[str, Any]:
        """A checked copy of ``body`` (floats normalized); `RpcSchemaError` if it does not fit."""
        if not isinstance(body, dict):
            raise RpcSchemaError(self.kind, None, f"body must be an object, got {_type_name(body)}")
        out: dict[str, Any] = {}
        for name, expected in self.required.items():
            if name not in body:
                raise RpcSchemaError(self.kind, name, "missing required field")
            out[name] = _check_type(self.kind, name, expected, body[name])
        for name, value in body.items():
            if name in out:
                continue
            expected_opt = self.optional.get(name)
            if expected_opt is None:
                raise RpcSchemaError(self.kind, str(name), "unknown field")
            out[name] = _check_type(self.kind, name, expected_opt, value)
        return out


def _field_specs(kind: str, fields: Mapping[str, FieldType] | None) -> dict[str, type]:
    out: dict[str, type] = {}
    for name, ftype in (fields or {}).items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{kind}: field names must be non-empty strings, got {name!r}")
        resolved = _TYPE_NAMES.get(ftype) if isinstance(ftype, str) else ftype
        if resolved is None or resolved not in _ALLOWED_TYPES:
            raise ValueError(
                f"{kind}.{name}: unsupported field type {ftype!r} "
                f"(use one of {', '.join(_TYPE_NAMES)})"
            )
        out[name] = resolved
    return out


class Registry:
    """Message kinds and their schemas: a dict of kind -> `KindSpec`."""

    __slots__ = ("_specs",)

    def __init__(self) -> None:
        self._specs: dict[str, KindSpec] = {}
        self.register(ERROR_KIND, required={"message": str})

    def register(
        self,
        kind: str,
        required: Mapping[str, FieldType] | None = None,
        optional: Mapping[str, FieldType] | None = None,
        *,
        replies: Iterable[str] = (),
    ) -> KindSpec:
        """Add ``kind``; registering the same schema again is a no-op.

        ``replies`` lists the reply kinds a request of this kind expects (empty:
        any). Raises ``ValueError`` for a bad name or type, a field that is both
        required and optional, or a kind already registered with another schema.
        """
        if not isinstance(kind, str) or not _KIND_RE.match(kind):
            raise ValueError(f"message kind must match {_KIND_RE.pattern}, got {kind!r}")
        req = _field_specs(kind, required)
        opt = _field_specs(kind, optional)
        both = sorted(req.keys() & opt.keys())
        if both:
            raise ValueError(f"{kind}: fields {both} are both required and optional")
        reply_kinds = frozenset(replies)
        for reply in reply_kinds:
            if not isinstance(reply, str) or not _KIND_RE.match(reply):
                raise ValueError(f"{kind}: bad reply kind {reply!r}")
        spec = KindSpec(kind, MappingProxyType(req), MappingProxyType(opt), reply_kinds)
        existing = self._specs.get(kind)
        if existing is not None:
            if _same(existing, spec):
                return existing
            raise ValueError(f"message kind {kind!r} is already registered with another schema")
        self._specs[kind] = spec
        return spec

    def get(self, kind: str) -> KindSpec | None:
        """The spec of ``kind``, or ``None`` when it is not registered."""
        return self._specs.get(kind)

    def spec(self, kind: str) -> KindSpec:
        """The spec of ``kind``; `RpcSchemaError` when it is not registered."""
        spec = self._specs.get(kind)
        if spec is None:
            raise RpcSchemaError(str(kind), None, "unknown message kind")
        return spec

    def validate(self, kind: str, body: Any) -> dict[str, Any]:
        """A checked copy of ``body`` for ``kind`` (see `KindSpec.validate`)."""
        return self.spec(kind).validate(body)

    def kinds(self) -> list[str]:
        """Every registered kind, sorted."""
        return sorted(self._specs)

    def __contains__(self, kind: object) -> bool:
        return kind in self._specs

    def __len__(self) -> int:
        return len(self._specs)


def _same(a: KindSpec, b: KindSpec) -> bool:
    return (
        dict(a.required) == dict(b.required)
        and dict(a.optional) == dict(b.optional)
        and a.replies == b.replies
    )


REGISTRY = Registry()
"""The process-wide registry used by the codec and transport unless told otherwise."""


def register(
    kind: str,
    required: Mapping[str, FieldType] | None = None,
    optional: Mapping[str, FieldType] | None = None,
    *,
    replies: Iterable[str] = (),
) -> KindSpec:
    """Register ``kind`` in the process-wide `REGISTRY` (see `Registry.register`)."""
    return REGISTRY.register(kind, required, optional, replies=replies)
