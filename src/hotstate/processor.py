"""The processor API (Kafka Streams' ``api.Processor``, KIP-478) and its timers (punctuations).

``stream.process(ProcessorClass, stores=[...])`` makes one instance of the class per task (Kafka Streams'
ProcessorSupplier); the instance sees::

    class Summarize(hotstate.Processor):
        def init(self, context):             # the task starts running (again: a fresh instance each time)
            self.context = context
            context.schedule(60_000, hotstate.Punctuation.STREAM_TIME, self.summarize)

        def process(self, record):           # each input record, a hotstate.Record
            ...; self.context.forward(record.with_value(...))

        def summarize(self, timestamp):      # a punctuation: the task's stream time (or wall clock), in ms
            ...

        def close(self):                     # the task closes (revoked, shut down, failed, rewound)
            ...

This module holds the pure parts: the punctuation types, the schedules and their queue (Kafka Streams'
PunctuationSchedule / PunctuationQueue), and the context a processor instance gets. The task runs them
(runtime/task.py), the task manager decides when (runtime/task_manager.py).
"""
from __future__ import annotations

import datetime
import enum
import heapq
import inspect
import itertools
from typing import TYPE_CHECKING, Any, Callable

from .errors import TopologyError
from .records import Record

if TYPE_CHECKING:
    from .runtime.task import ProcessorContext, Task


class Punctuation(enum.Enum):
    """When a scheduled callback runs (Kafka Streams' PunctuationType).

    - ``STREAM_TIME``: driven by the task's stream time (the largest record timestamp it has processed): checked
      after each record, so it fires only when records arrive; the first record fires it at once (schedules are
      aligned to 0), then each time stream time reaches the next multiple of the interval, at most once per
      record however many intervals that record skipped.
    - ``WALL_CLOCK_TIME``: driven by the system clock, from the processing thread's loop, also when no record
      arrives; first after one interval, then on the interval (at most once per loop if it fell behind).
    """

    STREAM_TIME = "STREAM_TIME"
    WALL_CLOCK_TIME = "WALL_CLOCK_TIME"


Punctuator = Callable[[int], Any]


class Cancellable:
    """What ``context.schedule`` returns: ``cancel()`` stops the schedule (also from inside its own callback)."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class PunctuationSchedule:
    """One scheduled callback: due at ``time``, every ``interval_ms``, of the processor ``owner``."""

    __slots__ = ("time", "interval_ms", "callback", "owner", "cancellable")

    def __init__(self, time: int, interval_ms: int, callback: Punctuator, owner: Any = None,
                 cancellable: Cancellable | None = None):
        self.time, self.interval_ms, self.callback, self.owner = time, interval_ms, callback, owner
        self.cancellable = cancellable or Cancellable()

    def next_time(self, now: int) -> int:
        """The next due time after firing at ``now``: one interval on, or, when ``now`` already reached that
        (missed intervals), the first multiple of the interval (from the schedule's alignment) after ``now``:
        a schedule never fires twice for one advance."""
        nxt = self.time + self.interval_ms
        if now >= nxt:
            nxt = self.time + ((now - self.time) // self.interval_ms + 1) * self.interval_ms
        return nxt


class PunctuationQueue:
    """Schedules of one type of one task, by due time (then by order of scheduling)."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, PunctuationSchedule]] = []
        self._seq = itertools.count()

    def add(self, schedule: PunctuationSchedule) -> Cancellable:
        heapq.heappush(self._heap, (schedule.time, next(self._seq), schedule))
        return schedule.cancellable

    def due(self, now: int) -> bool:
        """Whether ``punctuate(now, ...)`` would fire something (cancelled schedules are dropped here)."""
        heap = self._heap
        if not heap:
            return False
        while heap and heap[0][2].cancellable.cancelled:
            heapq.heappop(heap)
        return bool(heap) and heap[0][0] <= now

    def punctuate(self, now: int, fire: Callable[[PunctuationSchedule, int], None]) -> bool:
        """Fires every schedule due at ``now`` (``fire(schedule, now)``) once, in order of due time, and
        reschedules it (``next_time``) unless it was cancelled, also from inside its callback. A schedule added
        by a callback fires in this call if it is due. Returns whether anything fired. If ``fire`` raises, the
        failed schedule is rescheduled all the same and the error propagates."""
        fired = False
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, schedule = heapq.heappop(heap)
            if schedule.cancellable.cancelled:
                continue
            fired = True
            try:
                fire(schedule, now)
            finally:
                if not schedule.cancellable.cancelled:
                    schedule.time = schedule.next_time(now)
                    heapq.heappush(heap, (schedule.time, next(self._seq), schedule))
        return fired

    def clear(self) -> None:
        self._heap.clear()

    def __len__(self) -> int:
        return sum(1 for e in self._heap if not e[2].cancellable.cancelled)


def check_interval(interval_ms: Any) -> int:
    """An interval in ms: an int > 0 or a ``datetime.timedelta`` of at least 1 ms."""
    if isinstance(interval_ms, datetime.timedelta):
        interval_ms = interval_ms // datetime.timedelta(milliseconds=1)
    if not isinstance(interval_ms, int) or isinstance(interval_ms, bool) or interval_ms <= 0:
        raise ValueError(f"schedule(interval_ms={interval_ms!r}, ...): the interval is an int of milliseconds > 0 "
                         "(or a datetime.timedelta of at least 1 ms)")
    return interval_ms


class Processor:
    """An optional base class for ``stream.process(ProcessorClass, ...)`` (Kafka Streams' ``api.Processor``):
    ``init`` and ``close`` do nothing unless overridden; ``process`` must be defined. Any class with a
    ``process(record)`` method (and optionally ``init(context)`` and ``close()``) works as well."""

    def init(self, context: "Context") -> None:
        """Called once per task, before its first record, when the task starts running."""

    def process(self, record: Record) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Called when the task closes (revoked, shut down, failed) or rewinds; the instance is not used again."""


def check_processor_class(cls: type) -> None:
    """TopologyError unless ``cls`` can be a processor: it has a ``process`` method of its own, and ``init`` /
    ``close`` (if any) are callable."""
    process = getattr(cls, "process", None)
    if not callable(process) or process is Processor.process:
        raise TopologyError(f"process({cls.__name__}): a processor class needs a method process(self, record); "
                            "for the function form pass a function fn(record, ctx) instead of a class")
    for name in ("init", "close"):
        attr = getattr(cls, name, None)
        if attr is not None and not callable(attr):
            raise TopologyError(f"process({cls.__name__}): {name} must be a method, got {type(attr).__name__}")
    try:
        inspect.signature(cls).bind()
    except TypeError:
        raise TopologyError(f"process({cls.__name__}): hotstate makes one instance per task as {cls.__name__}(), "
                            "so its __init__ must take no arguments; pass settings as class attributes (e.g. a "
                            "subclass per setting) and set per-task state up in init(context)") from None
    except ValueError:  # no signature to read (a builtin): the instance is made as is
        pass


class Context:
    """What a processor instance gets in ``init(context)``: its task's stores, ``forward``, ``schedule``, and the
    current record's metadata. One per processor instance (per task)."""

    def __init__(self, node: Any, task: "Task", runtime: "ProcessorContext", wall_clock: Callable[[], int]):
        self._node, self._task, self._runtime, self._wall_clock = node, task, runtime, wall_clock
        self._initializing = False
        self._closed = False

    # ---- what the processor may use ----
    @property
    def task_id(self) -> str:
        return self._task.id

    @property
    def partition(self) -> int:
        return self._task.partition

    @property
    def stream_time(self) -> int:
        """The task's stream time: the largest record timestamp it has processed (-1 before the first)."""
        return self._task.stream_time

    def current_stream_time_ms(self) -> int:
        """``stream_time`` (Kafka Streams' ``currentStreamTimeMs``)."""
        return self._task.stream_time

    def current_wall_clock_ms(self) -> int:
        """The clock ``WALL_CLOCK_TIME`` punctuations go by (ms since the epoch)."""
        return self._wall_clock()

    def store(self, name: str) -> Any:
        """One of the stores listed in ``process(..., stores=[...])``, of this task."""
        if name not in self._node.store_names:
            raise KeyError(f"store {name!r} is not connected to this processor; list it in process(stores=[...])")
        return self._task.stores[name].view

    def forward(self, record: Record) -> None:
        """Sends ``record`` to the nodes after this processor (``to()``, ...), with its key, value, timestamp and
        headers. Build it from the input record (``record.with_value(...)``: it keeps the input's timestamp and
        headers) or with ``hotstate.Record(key, value[, timestamp][, headers])`` (no timestamp: the current one,
        the record's being processed or the punctuation's; no headers unless given)."""
        if self._initializing:
            raise TopologyError("context.forward() was called from init(): a processor may forward only while "
                                "processing a record or in a punctuation; schedule a punctuation in init() and "
                                "forward from its callback")
        if self._closed:
            raise TopologyError(f"context.forward() after the processor's task {self._task.id} closed: a processor "
                                "instance is not used after close(); keep no reference to its context")
        if not isinstance(record, Record):
            raise TypeError(f"context.forward() takes a hotstate.Record (e.g. record.with_value(v)), got "
                            f"{type(record).__name__}")
        ts = record.timestamp  # None: the current record's or punctuation's (forward_record)
        if ts is not None and (not isinstance(ts, int) or isinstance(ts, bool) or ts < 0):
            raise ValueError(f"context.forward(): the record's timestamp is {ts!r}; a timestamp is an int >= 0 (ms "
                             "since the epoch): use record.with_timestamp(ms)")
        self._runtime.forward_record(self._node, record)

    def schedule(self, interval_ms: int | datetime.timedelta, punctuation_type: Punctuation,
                 callback: Punctuator) -> Cancellable:
        """Calls ``callback(timestamp_ms)`` every ``interval_ms`` of stream time or wall-clock time (see
        :class:`Punctuation`), on the processing thread, with this task's stores; what it writes and forwards is
        committed with the task. Returns a :class:`Cancellable`."""
        interval = check_interval(interval_ms)
        if not isinstance(punctuation_type, Punctuation):
            raise ValueError(f"schedule(..., {punctuation_type!r}, ...): the punctuation type is "
                             "hotstate.Punctuation.STREAM_TIME or hotstate.Punctuation.WALL_CLOCK_TIME")
        if not callable(callback):
            raise TypeError(f"schedule(...): the callback must be callable as callback(timestamp_ms), got "
                            f"{type(callback).__name__}")
        if self._closed:
            raise TopologyError(f"context.schedule() after the processor's task {self._task.id} closed")
        if punctuation_type is Punctuation.STREAM_TIME:
            start = 0  # aligned to 0: the first record fires it
        else:
            start = self._wall_clock() + interval
        return self._task.punctuations[punctuation_type].add(PunctuationSchedule(start, interval, callback, self))
