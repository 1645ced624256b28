"""Processor nodes of windowed stream-stream joins (Kafka Streams' KStreamKStreamJoin with its "outer join
store" of records not joined yet, KIP-633 / Kafka Streams 3.1+).

Each side of a join is one node; both forward into one node that continues the joined stream. A side keeps
its records in its own windowed store (this side's), keyed by (key, record timestamp); several records of
one key and timestamp are one entry whose value is the list of their values (Kafka Streams keeps duplicates
with a sequence number in the key instead; docs/formats.md). Left and outer joins add a key-value store of
the records that found no partner yet, in timestamp order; they are emitted with None for the other side
once their window has closed. Like every node they hold no per-task state: stream time is derived from the
two windowed stores (restored with them), so it survives restarts and rebalances."""
from __future__ import annotations

import struct
import weakref
from typing import Any, Callable

from ..serde import Serde
from ..windows import JoinWindows
from .nodes import Node, _event_time

_TIME = struct.Struct(">q")
_LEN = struct.Struct(">I")
LEFT_SIDE, RIGHT_SIDE = b"\x00", b"\x01"

# A cache per task's outer store (its view): (write generation, the smallest timestamp it may hold, None: empty).
# Known exactly after a scan, lowered by every put; a delete leaves it a lower bound; a commit or rewind moves the
# generation on (one scan then). While stream time keeps every window at or after it open, no scan is needed (as
# Kafka Streams' time tracker keeps its minTime).
_LEAST_WAITING: "weakref.WeakKeyDictionary[Any, tuple[int, int | None]]" = weakref.WeakKeyDictionary()


def encode_values(values: list[bytes]) -> bytes:
    """A list of serialized values: each as a 4-byte big-endian length then its bytes."""
    return b"".join(_LEN.pack(len(v)) + v for v in values)


def decode_values(raw: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(raw):
        (n,) = _LEN.unpack_from(raw, i)
        i += _LEN.size
        if i + n > len(raw):
            raise ValueError(f"a join store value list is truncated: {n} bytes announced at {i}, {len(raw) - i} left")
        out.append(raw[i:i + n])
        i += n
    return out


class ValueList(Serde):
    """The value serde of a join's windowed store: the list of the values of one key at one timestamp."""

    def __init__(self, inner: Serde):
        self.inner = inner
        self.name = f"join_values({inner.name})"

    def serialize(self, value: Any) -> bytes:
        return encode_values([self.inner.serialize(v) for v in value])

    def deserialize(self, data: bytes) -> Any:
        return [self.inner.deserialize(v) for v in decode_values(data)]

    def __eq__(self, other: object) -> bool:  # StoreSpec equality (a store declared twice is compared)
        return isinstance(other, ValueList) and other.inner is self.inner

    def __hash__(self) -> int:
        return hash(id(self.inner))


def outer_key(timestamp_ms: int, side: bytes, key_bytes: bytes) -> bytes:
    """The outer join store's key: timestamp (8 bytes big-endian; >= 0, so byte order is time order), the side
    (0 left, 1 right), then the key's bytes."""
    return _TIME.pack(timestamp_ms) + side + key_bytes


class StreamJoinSideNode(Node):
    """One side of a windowed stream-stream join. For a record ``(key, value)`` at ``ts`` of this side:

    1. A None key or value: dropped and counted (``dropped_records_null_key_total`` /
       ``dropped_records_null_value_total``).
    2. Stream time (the largest timestamp accepted by either side: the larger of the two stores' stream
       times) minus grace above ``ts``: dropped and counted (``dropped_late_records_total``).
    3. The record joins this side's store (appended to its key's list at ``ts``).
    4. Left / outer: every not-joined record whose window closed (stream time > its timestamp +
       time_difference + grace) is forwarded as ``joiner(v, None)`` / ``joiner(None, v)`` with its own
       timestamp, in timestamp order, and leaves the outer store.
    5. Each record of the other side with this key and a timestamp within ``time_difference`` of ``ts`` is
       joined: ``joiner(left value, right value)``, timestamp ``max(ts, other's)``, in the other side's
       timestamp order; those of them waiting in the outer store leave it (they have a partner now).
    6. No partner, and this side emits unjoined records (left side of a left join, both of an outer join): the
       record waits in the outer store until its window closes.

    A record cannot find a partner that step 4 already emitted as unjoined: a partner's timestamp is at most
    ``ts + time_difference`` and ``ts >= stream time - grace`` (step 2)."""

    __slots__ = ("is_left", "this_store", "other_store", "outer_store", "emits_unjoined", "joiner", "windows",
                 "key_serde", "this_serde", "other_serde")

    def __init__(self, is_left: bool, this_store: str, other_store: str, outer_store: str | None,
                 emits_unjoined: bool, joiner: Callable[[Any, Any], Any], windows: JoinWindows,
                 key_serde: Serde, this_serde: Serde, other_serde: Serde):
        super().__init__()
        self.is_left, self.this_store, self.other_store = is_left, this_store, other_store
        self.outer_store, self.emits_unjoined, self.joiner, self.windows = outer_store, emits_unjoined, joiner, windows
        self.key_serde, self.this_serde, self.other_serde = key_serde, this_serde, other_serde

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        if key is None:
            ctx.metrics.dropped_null_key += 1
            return
        if value is None:
            ctx.metrics.dropped_null_value += 1
            return
        ts = _event_time(ctx)
        this, other = ctx.store(self.this_store), ctx.store(self.other_store)
        stream_time = _shared_stream_time(this, other)
        if stream_time is not None and ts < stream_time - self.windows.grace_ms:
            ctx.metrics.record_late_drop(ctx.task_id)
            return
        values = this.get(key, ts)
        this.put(key, ts, [value] if values is None else values + [value], ts)
        if stream_time is None or ts > stream_time:
            stream_time = ts
        if self.outer_store is not None:
            emit_closed(self, ctx, stream_time)
        d = self.windows.time_difference_ms
        matches = other.fetch_with_timestamps(key, ts - d, ts + d)
        headers = ctx.headers
        try:
            for other_ts, other_values, _ in matches:
                ctx.timestamp, ctx.headers = max(ts, other_ts), headers
                for other_value in other_values:
                    joined = self.joiner(value, other_value) if self.is_left else self.joiner(other_value, value)
                    self.forward(key, joined, ctx)
        finally:
            ctx.timestamp, ctx.headers = ts, headers
        if self.outer_store is None:
            return
        outer = ctx.store(self.outer_store)
        key_bytes = self.key_serde.serialize(key)
        if matches:
            other_side = RIGHT_SIDE if self.is_left else LEFT_SIDE
            for other_ts, _, _ in matches:
                waiting = outer_key(other_ts, other_side, key_bytes)
                if outer.get(waiting) is not None:  # no changelog tombstone for records that never waited
                    outer.delete(waiting)
        elif self.emits_unjoined:
            waiting_key = outer_key(ts, LEFT_SIDE if self.is_left else RIGHT_SIDE, key_bytes)
            raw = outer.get(waiting_key)
            mine = self.this_serde.serialize(value)
            outer.put(waiting_key, encode_values([mine]) if raw is None else raw + encode_values([mine]))
            known = _LEAST_WAITING.get(outer)
            if known is not None and known[0] == outer.write_generation:
                _LEAST_WAITING[outer] = (known[0], ts if known[1] is None else min(known[1], ts))


def _shared_stream_time(this: Any, other: Any) -> int | None:
    a, b = this.stream_time(), other.stream_time()
    if a is None:
        return b
    return a if b is None else max(a, b)


def emit_closed(node: StreamJoinSideNode, ctx: Any, stream_time: int) -> None:
    """Forwards and removes every record of the outer store whose window closed (its timestamp + time_difference +
    grace < stream time), oldest first; stops at the first still open (the store is in timestamp order)."""
    assert node.outer_store is not None
    outer = ctx.store(node.outer_store)
    horizon = stream_time - node.windows.time_difference_ms - node.windows.grace_ms  # closed: timestamp < horizon
    known = _LEAST_WAITING.get(outer)
    if known is not None and known[0] == outer.write_generation and (known[1] is None or known[1] >= horizon):
        return
    closed, least = [], None
    for raw_key, raw in outer.range(None, None):
        if _TIME.unpack_from(raw_key)[0] >= horizon:
            least = _TIME.unpack_from(raw_key)[0]
            break
        closed.append((raw_key, raw))
    _LEAST_WAITING[outer] = (outer.write_generation, least)  # the deletes below keep it exact
    if not closed:
        return
    ts, headers = ctx.timestamp, ctx.headers
    ctx.headers = None  # the outer store keeps no headers
    left_serde, right_serde = ((node.this_serde, node.other_serde) if node.is_left
                               else (node.other_serde, node.this_serde))
    try:
        for raw_key, raw in closed:
            outer.delete(raw_key)
            ctx.timestamp = _TIME.unpack_from(raw_key)[0]
            key = node.key_serde.deserialize(raw_key[_TIME.size + 1:])
            is_left = raw_key[_TIME.size:_TIME.size + 1] == LEFT_SIDE
            for v in decode_values(raw):
                if is_left:
                    node.forward(key, node.joiner(left_serde.deserialize(v), None), ctx)
                else:
                    node.forward(key, node.joiner(None, right_serde.deserialize(v)), ctx)
    finally:
        ctx.timestamp, ctx.headers = ts, headers
