"""Key and value serdes. Values default to orjson; any object with ``serialize`` and
``deserialize`` can be used. Serdes are stateless and safe to share between threads.

Built-ins by name: ``json`` (orjson), ``str`` (utf-8), ``bytes`` (raw). ``None``
passes through every built-in serde both ways (Kafka's null key or tombstone).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import orjson


@runtime_checkable
class Serde(Protocol):
    """Turns values into bytes and back. ``deserialize`` raises on undecodable input."""

    def serialize(self, value: Any) -> bytes | None: ...

    def deserialize(self, data: bytes | None) -> Any: ...


class JsonSerde:
    """orjson; dict keys must be str. The default value serde."""

    name = "json"

    def serialize(self, value: Any) -> bytes | None:
        return None if value is None else orjson.dumps(value)

    def deserialize(self, data: bytes | None) -> Any:
        return None if data is None else orjson.loads(data)


class StrSerde:
    """UTF-8 text; anything else is turned into text with ``str()``. The default key serde."""

    name = "str"

    def serialize(self, value: Any) -> bytes | None:
        if value is None:
            return None
        if isinstance(value, bytes):
            return value
        return str(value).encode()

    def deserialize(self, data: bytes | None) -> Any:
        return None if data is None else data.decode("utf-8")


class BytesSerde:
    """Raw bytes, unchanged."""

    name = "bytes"

    def serialize(self, value: Any) -> bytes | None:
        if value is None or isinstance(value, bytes):
            return value
        raise TypeError(f"the bytes serde needs bytes, got {type(value).__name__}")

    def deserialize(self, data: bytes | None) -> Any:
        return data


SERDES: dict[str, Serde] = {"json": JsonSerde(), "str": StrSerde(), "bytes": BytesSerde()}


def get_serde(spec: str | Serde) -> Serde:
    """A serde by name (``json``, ``str``, ``bytes``) or the given serde object itself."""
    if isinstance(spec, str):
        try:
            return SERDES[spec]
        except KeyError:
            from streamer.errors import ConfigError

            raise ConfigError(
                f"unknown serde {spec!r}: use one of {', '.join(sorted(SERDES))} "
                "or an object with serialize() and deserialize()"
            ) from None
    if isinstance(spec, Serde):
        return spec
    from streamer.errors import ConfigError

    raise ConfigError(f"{spec!r} is not a serde: it needs serialize() and deserialize() methods")
