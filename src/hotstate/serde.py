"""Serdes: how keys and values become bytes and back.

Built-ins: ``STRING`` (UTF-8), ``BYTES`` (as is), ``INT64`` (8-byte big-endian signed, like Kafka's
``LongSerializer``), ``JSON``. A user-defined serde subclasses :class:`Serde` or is built with
:func:`of`. :func:`time_windowed` wraps a key serde for :class:`hotstate.Windowed` keys in Kafka Streams'
time-windowed format, :func:`session_windowed` in its session-windowed one. ``None`` always maps to ``None`` (a
tombstone), whatever the serde.
"""
from __future__ import annotations

import struct
from typing import Any, Callable

import orjson

_INT64 = struct.Struct(">q")


class Serde:
    """Turns values into bytes and back. Subclasses override ``serialize`` and ``deserialize``."""

    name = "custom"

    def serialize(self, value: Any) -> bytes:
        raise NotImplementedError

    def deserialize(self, data: bytes) -> Any:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"serde.{self.name}"


class _String(Serde):
    name = "STRING"

    def serialize(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise TypeError(f"STRING serde expects str, got {type(value).__name__}")
        return value.encode("utf-8")

    def deserialize(self, data: bytes) -> str:
        return data.decode("utf-8")


class _Bytes(Serde):
    name = "BYTES"

    def serialize(self, value: Any) -> bytes:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(f"BYTES serde expects bytes, got {type(value).__name__}")
        return bytes(value)

    def deserialize(self, data: bytes) -> bytes:
        return data


class _Int64(Serde):
    name = "INT64"

    def serialize(self, value: Any) -> bytes:
        return _INT64.pack(value)

    def deserialize(self, data: bytes) -> int:
        if len(data) != 8:
            raise ValueError(f"INT64 serde expects 8 bytes, got {len(data)}")
        return _INT64.unpack(data)[0]


class _Json(Serde):
    name = "JSON"

    def serialize(self, value: Any) -> bytes:
        return orjson.dumps(value)

    def deserialize(self, data: bytes) -> Any:
        return orjson.loads(data)


class _FnSerde(Serde):
    def __init__(self, serialize: Callable[[Any], bytes], deserialize: Callable[[bytes], Any], name: str):
        self._ser, self._de, self.name = serialize, deserialize, name

    def serialize(self, value: Any) -> bytes:
        return self._ser(value)

    def deserialize(self, data: bytes) -> Any:
        return self._de(data)


def of(serialize: Callable[[Any], bytes], deserialize: Callable[[bytes], Any], name: str = "custom") -> Serde:
    """A serde from two functions."""
    return _FnSerde(serialize, deserialize, name)


class _TimeWindowed(Serde):
    def __init__(self, inner: Serde, window_size_ms: int):
        self.inner, self.window_size_ms = inner, window_size_ms
        self.name = f"time_windowed({inner!r}, {window_size_ms})"

    def serialize(self, value: Any) -> bytes:
        from .windows import Windowed
        if not isinstance(value, Windowed):
            raise TypeError(f"a time-windowed serde expects a hotstate.Windowed, got {type(value).__name__}")
        return self.inner.serialize(value.key) + _INT64.pack(value.start_ms)

    def deserialize(self, data: bytes) -> Any:
        from .windows import Windowed
        if len(data) < 8:
            raise ValueError(f"a time-windowed key has at least 8 bytes (the window start), got {len(data)}")
        start = _INT64.unpack_from(data, len(data) - 8)[0]
        return Windowed(self.inner.deserialize(data[:-8]), start, start + self.window_size_ms)

    def __repr__(self) -> str:
        return f"serde.{self.name}"


def time_windowed(inner: Serde, window_size_ms: int) -> Serde:
    """Keys of windowed results (:class:`hotstate.Windowed`) as Kafka Streams' ``TimeWindowedSerializer`` writes
    them: the inner serde's bytes followed by the window start, 8 bytes big-endian. The bytes hold no window
    end: reading takes it as ``start + window_size_ms`` (``TimeWindowedDeserializer``)."""
    if not isinstance(inner, Serde):
        raise TypeError(f"time_windowed needs a hotstate serde for the key, got {type(inner).__name__}")
    if not isinstance(window_size_ms, int) or isinstance(window_size_ms, bool) or window_size_ms <= 0:
        raise ValueError(f"window_size_ms={window_size_ms!r} is invalid: it must be a positive integer")
    return _TimeWindowed(inner, window_size_ms)


class _SessionWindowed(Serde):
    def __init__(self, inner: Serde):
        self.inner = inner
        self.name = f"session_windowed({inner!r})"

    def serialize(self, value: Any) -> bytes:
        from .windows import Windowed
        if not isinstance(value, Windowed):
            raise TypeError(f"a session-windowed serde expects a hotstate.Windowed, got {type(value).__name__}")
        return self.inner.serialize(value.key) + _INT64.pack(value.end_ms) + _INT64.pack(value.start_ms)

    def deserialize(self, data: bytes) -> Any:
        from .windows import Windowed
        if len(data) < 16:
            raise ValueError(f"a session-windowed key has at least 16 bytes (session end and start), got {len(data)}")
        end, start = _INT64.unpack_from(data, len(data) - 16)[0], _INT64.unpack_from(data, len(data) - 8)[0]
        return Windowed(self.inner.deserialize(data[:-16]), start, end)

    def __repr__(self) -> str:
        return f"serde.{self.name}"


def session_windowed(inner: Serde) -> Serde:
    """Keys of session results (:class:`hotstate.Windowed`, ``end_ms`` inclusive) as Kafka Streams'
    ``SessionWindowedSerializer`` writes them (``SessionKeySchema``): the inner serde's bytes, then the session
    end, then its start, each 8 bytes big-endian."""
    if not isinstance(inner, Serde):
        raise TypeError(f"session_windowed needs a hotstate serde for the key, got {type(inner).__name__}")
    return _SessionWindowed(inner)


STRING: Serde = _String()
BYTES: Serde = _Bytes()
INT64: Serde = _Int64()
JSON: Serde = _Json()


def dumps(serde: Serde, value: Any) -> bytes | None:
    """Serialize, keeping ``None`` as ``None``."""
    return None if value is None else serde.serialize(value)


def loads(serde: Serde, data: bytes | None) -> Any:
    """Deserialize, keeping ``None`` as ``None``."""
    return None if data is None else serde.deserialize(data)
