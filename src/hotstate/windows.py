"""Time windows (Kafka Streams' ``TimeWindows``) and the key of a windowed result (``Windowed``).

``tumbling(size_ms, grace_ms)``: windows ``[start, start + size)`` with starts at multiples of the size.
``hopping(size_ms, advance_ms, grace_ms)``: windows of ``size_ms`` every ``advance_ms``; a record belongs to
every window that contains its timestamp (``size_ms / advance_ms`` of them, fewer near time 0). Window starts
are never negative, as in Kafka Streams.

Grace: a window accepts records until stream time (the largest timestamp among the records that reached the
aggregation, as Kafka Streams' observed stream time) reaches ``end + grace``; a record that arrives later for it is
dropped and counted (``dropped_late_records_total``).
Retention: how long (in stream time) a window stays in its store and is served to queries: a window whose
``start <= stream time - retention`` is expired. Default, and the least allowed: ``size + grace``, which keeps
every window that can still change (docs/architecture.md, "Time and windows").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .errors import ConfigError


class Windowed(NamedTuple):
    """The key of a windowed aggregation's result: the grouping key and the window ``[start_ms, end_ms)``."""

    key: Any
    start_ms: int
    end_ms: int


def _int(name: str, value: object, least: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        what = "a positive integer" if least == 1 else f"an integer >= {least}"
        raise ConfigError(f"{name}={value!r} is invalid: it must be {what} (milliseconds)")
    return value


@dataclass(frozen=True)
class TimeWindows:
    """Fixed-size windows that hop by ``advance_ms`` (tumbling when it equals the size). Build them with
    :func:`tumbling` or :func:`hopping`."""

    size_ms: int
    advance_ms: int
    grace_ms: int
    retention_ms: int

    def __post_init__(self) -> None:
        _int("size_ms", self.size_ms, 1)
        _int("advance_ms", self.advance_ms, 1)
        _int("grace_ms", self.grace_ms, 0)
        _int("retention_ms", self.retention_ms, 1)
        if self.advance_ms > self.size_ms:
            raise ConfigError(f"advance_ms={self.advance_ms} is invalid: it must not exceed size_ms={self.size_ms} "
                              "(records between windows would belong to none)")
        if self.retention_ms < self.size_ms + self.grace_ms:
            raise ConfigError(f"retention_ms={self.retention_ms} is invalid: it must be at least size_ms + grace_ms "
                              f"= {self.size_ms + self.grace_ms}, or a window would expire while it still accepts "
                              "records")

    @property
    def tumbling(self) -> bool:
        return self.advance_ms == self.size_ms

    def window_starts(self, timestamp_ms: int) -> range:
        """The starts of the windows containing ``timestamp_ms`` (>= 0), ascending (Kafka Streams'
        ``TimeWindows.windowsFor``)."""
        advance = self.advance_ms
        first = (max(0, timestamp_ms - self.size_ms + advance) // advance) * advance
        return range(first, timestamp_ms + 1, advance)

    def end_of(self, start_ms: int) -> int:
        return start_ms + self.size_ms


def tumbling(size_ms: int, grace_ms: int, retention_ms: int | None = None) -> TimeWindows:
    """Windows of ``size_ms`` that do not overlap, accepting records ``grace_ms`` past their end."""
    _int("size_ms", size_ms, 1)
    _int("grace_ms", grace_ms, 0)
    return TimeWindows(size_ms, size_ms, grace_ms, size_ms + grace_ms if retention_ms is None else retention_ms)


def hopping(size_ms: int, advance_ms: int, grace_ms: int, retention_ms: int | None = None) -> TimeWindows:
    """Windows of ``size_ms`` starting every ``advance_ms`` (``0 < advance_ms <= size_ms``), accepting records
    ``grace_ms`` past their end."""
    _int("size_ms", size_ms, 1)
    _int("grace_ms", grace_ms, 0)
    return TimeWindows(size_ms, advance_ms, grace_ms, size_ms + grace_ms if retention_ms is None else retention_ms)


@dataclass(frozen=True)
class SessionWindows:
    """Sessions per key (Kafka Streams' ``SessionWindows``): records closer than ``inactivity_gap_ms`` to each
    other belong to one session ``[first timestamp, last timestamp]`` (both ends inclusive; a session of one
    record is ``[t, t]``). A record within the gap of existing sessions merges them into one. Build them with
    :func:`session`.

    Grace: a record is dropped (and counted) when the session it would make ends before ``stream time -
    inactivity_gap_ms - grace_ms`` (Kafka Streams' ``KStreamSessionWindowAggregate``). Retention (stream time
    a session stays in its store after its end): default and least allowed ``inactivity_gap_ms + grace_ms``."""

    inactivity_gap_ms: int
    grace_ms: int
    retention_ms: int

    def __post_init__(self) -> None:
        _int("inactivity_gap_ms", self.inactivity_gap_ms, 1)
        _int("grace_ms", self.grace_ms, 0)
        _int("retention_ms", self.retention_ms, 1)
        if self.retention_ms < self.inactivity_gap_ms + self.grace_ms:
            raise ConfigError(f"retention_ms={self.retention_ms} is invalid: it must be at least inactivity_gap_ms + "
                              f"grace_ms = {self.inactivity_gap_ms + self.grace_ms}, or a session would expire while "
                              "records can still join it")


def session(inactivity_gap_ms: int, grace_ms: int, retention_ms: int | None = None) -> SessionWindows:
    """Session windows: a key's records closer than ``inactivity_gap_ms`` form one session."""
    _int("inactivity_gap_ms", inactivity_gap_ms, 1)
    _int("grace_ms", grace_ms, 0)
    return SessionWindows(inactivity_gap_ms, grace_ms,
                          inactivity_gap_ms + grace_ms if retention_ms is None else retention_ms)


@dataclass(frozen=True)
class SlidingWindows:
    """Windows defined by the records (Kafka Streams' ``SlidingWindows``): every window is ``[start, start +
    time_difference_ms]``, both ends inclusive, and exists because a record's timestamp is its end (the
    record's left window) or one past its start (a record's right window, which holds the records after it
    within the time difference). A record updates every window holding it. Build them with :func:`sliding`.

    Grace: a window accepts records while ``end >= stream time - grace_ms``; a record whose own left window is
    closed is dropped and counted. Retention: default and least allowed ``2 * time_difference_ms + grace_ms +
    1``: a record on time at ``t`` may take its aggregate from a window starting at ``t - 2 * d``, which must
    still be live (``start > stream time - retention``). Kafka Streams allows one less, which loses that window
    for a record at exactly ``stream time - grace`` (docs/architecture.md)."""

    time_difference_ms: int
    grace_ms: int
    retention_ms: int

    def __post_init__(self) -> None:
        _int("time_difference_ms", self.time_difference_ms, 1)
        _int("grace_ms", self.grace_ms, 0)
        _int("retention_ms", self.retention_ms, 1)
        least = 2 * self.time_difference_ms + self.grace_ms + 1
        if self.retention_ms < least:
            raise ConfigError(f"retention_ms={self.retention_ms} is invalid: it must be at least 2 * "
                              f"time_difference_ms + grace_ms + 1 = {least}: a new window may take its aggregate "
                              "from a window that old")

    @property
    def size_ms(self) -> int:
        """The length of a window as ``Windowed.end_ms - start_ms`` (Kafka Streams' sliding window size)."""
        return self.time_difference_ms


def sliding(time_difference_ms: int, grace_ms: int, retention_ms: int | None = None) -> SlidingWindows:
    """Sliding windows: every distinct window of ``time_difference_ms`` that holds records of a key."""
    _int("time_difference_ms", time_difference_ms, 1)
    _int("grace_ms", grace_ms, 0)
    return SlidingWindows(time_difference_ms, grace_ms,
                          2 * time_difference_ms + grace_ms + 1 if retention_ms is None else retention_ms)


@dataclass(frozen=True)
class JoinWindows:
    """The window of a stream-stream join (Kafka Streams' ``JoinWindows.ofTimeDifferenceAndGrace``): a record
    at ``t`` on either side joins every record of the other side with the same key whose timestamp is in
    ``[t - time_difference_ms, t + time_difference_ms]`` (symmetric: Kafka Streams' ``before`` and ``after``
    both equal to the time difference; other asymmetries are not offered). Build them with :func:`join`.

    Grace: a record whose timestamp is below the join's stream time (the largest timestamp it accepted, on
    either side) minus ``grace_ms`` is dropped and counted (``dropped_late_records_total``). A record of a left
    or outer join that found no partner is emitted with None for the other side once its window has closed:
    stream time > its timestamp + time_difference_ms + grace_ms (never before: no spurious results).
    Retention of the join's stores: ``2 * time_difference_ms + grace_ms + 1`` (the window size, before + after,
    plus grace, plus one: every record that can still join is kept). See docs/architecture.md."""

    time_difference_ms: int
    grace_ms: int

    def __post_init__(self) -> None:
        _int("time_difference_ms", self.time_difference_ms, 0)
        _int("grace_ms", self.grace_ms, 0)

    @property
    def before_ms(self) -> int:
        return self.time_difference_ms

    @property
    def after_ms(self) -> int:
        return self.time_difference_ms

    @property
    def size_ms(self) -> int:
        """Before + after (Kafka Streams' ``JoinWindows.size()``)."""
        return self.before_ms + self.after_ms

    @property
    def retention_ms(self) -> int:
        return self.size_ms + self.grace_ms + 1


def join(time_difference_ms: int, grace_ms: int) -> JoinWindows:
    """The window of ``stream.join(other, joiner, window=...)`` (and ``left_join`` / ``outer_join``): records
    of the two streams join when their timestamps differ by at most ``time_difference_ms``; records later than
    ``grace_ms`` behind stream time are dropped."""
    return JoinWindows(time_difference_ms, grace_ms)
