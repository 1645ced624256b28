"""The processor API through the TaskManager, without a broker: per-task instances, init / process / close,
STREAM_TIME punctuations after the records that advance stream time, WALL_CLOCK_TIME punctuations on an
injected clock, forward with timestamps and headers, and the errors a user meets."""
from __future__ import annotations

import pytest

import hotstate
from hotstate import Punctuation, Record, StoreSpec, TopicPartition, serde
from hotstate.errors import PunctuationError, TopologyError
from hotstate.observe.metrics import Metrics
from hotstate.runtime.task import TaskState
from hotstate.runtime.task_manager import TaskManager
from hotstate.state.state_dir import StateDirectory
from hotstate.testing import TopologyTestDriver
from test_task_manager import FakeCommitter, FakeConsumer, FakeUpdater
from unit_support import FakeMsg, Harness


class HeaderProducer:
    def __init__(self):
        self.sent = []

    def produce(self, topic, value=None, key=None, timestamp=0, headers=None, **kw):
        self.sent.append((topic, key and key.decode(), value and value.decode(), timestamp, headers))

    def poll(self, timeout):
        pass


class Summary(hotstate.Processor):
    """Sums values per key; every 10 ms of stream time forwards one summary record per key."""

    made: list["Summary"] = []

    def init(self, context):
        self.context = context
        self.sums = context.store("sums")
        self.punctuated: list[int] = []
        self.closed = False
        Summary.made.append(self)
        context.schedule(10, Punctuation.STREAM_TIME, self.summarize)

    def process(self, record):
        self.sums.put(record.key, (self.sums.get(record.key) or 0) + int(record.value))
        self.context.forward(record.with_value(f"got {record.value}"))

    def summarize(self, timestamp):
        self.punctuated.append(timestamp)
        for key, total in self.sums.all():
            self.context.forward(Record(key, f"sum {total}", timestamp))

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def _reset():
    Summary.made.clear()


class Clock:
    def __init__(self, now=1_000_000):
        self.now = now

    def __call__(self):
        return self.now


def build(make_app, processor=Summary, clock=None, **cfg):
    app = make_app(**cfg)
    (app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
        .process(processor, stores=[StoreSpec("sums", key_serde=serde.STRING, value_serde=serde.INT64, kind="memory")],
                 key_serde=serde.STRING, value_serde=serde.STRING)
        .to("out"))
    state_dir = StateDirectory(app.config.state_dir, app.config.app_id)
    producer = HeaderProducer()
    tm = TaskManager(app.config, app._topology, state_dir, FakeConsumer(), FakeUpdater(), Metrics(),
                     FakeCommitter(producer), wall_clock=clock or Clock())
    return tm, producer


def running(tm, partitions=(0,)):
    tm.partitions_assigned([TopicPartition("in", p) for p in partitions])
    tm._updater.restored.extend(tm._updater.added)
    tm._updater.added.clear()
    tm.handle_restored()
    return [tm.tasks[f"0_{p}"] for p in partitions]


def msgs(*recs, partition=0, start=0):
    """(key, value, timestamp[, headers]) -> FakeMsgs at consecutive offsets."""
    out = []
    for i, rec in enumerate(recs):
        key, value, ts = rec[:3]
        headers = rec[3] if len(rec) > 3 else None
        out.append(FakeMsg("in", partition, start + i, key.encode(), value.encode(), ts, headers))
    return out


def test_stream_time_punctuation_fires_after_the_record_that_advances_it(make_app):
    tm, producer = build(make_app)
    running(tm)
    tm.process(msgs(("a", "1", 3, [("trace", b"t1")]), ("b", "2", 7), ("a", "4", 9), ("a", "1", 12),
                    ("b", "1", 5), ("b", "5", 47)))
    (proc,) = Summary.made
    assert proc.punctuated == [3, 12, 47]  # 3: aligned to 0, the first record; 47 skipped 20..40: once
    assert producer.sent == [
        ("out", "a", "got 1", 3, [("trace", b"t1")]),  # process output: the input's timestamp and headers
        ("out", "a", "sum 1", 3, None),  # punctuation output: its timestamp, no headers
        ("out", "b", "got 2", 7, None),
        ("out", "a", "got 4", 9, None),
        ("out", "a", "got 1", 12, None),
        ("out", "a", "sum 6", 12, None), ("out", "b", "sum 2", 12, None),
        ("out", "b", "got 1", 5, None),  # out of order: stream time stays 12, no punctuation
        ("out", "b", "got 5", 47, None),
        ("out", "a", "sum 6", 47, None), ("out", "b", "sum 8", 47, None),
    ]


def test_each_task_has_its_own_instance_and_stream_time(make_app):
    tm, producer = build(make_app)
    t0, t1 = running(tm, (0, 1))
    tm.process(msgs(("a", "1", 15)) + msgs(("x", "2", 4), partition=1))
    tm.process(msgs(("a", "1", 19), start=1) + msgs(("x", "2", 10), partition=1, start=1))
    by_task = {p.context.task_id: p for p in Summary.made}
    assert sorted(by_task) == ["0_0", "0_1"]
    assert by_task["0_0"].punctuated == [15] and by_task["0_1"].punctuated == [4, 10]
    assert t0.stores["sums"].view.get("x") is None and t1.stores["sums"].view.get("x") == 4


def test_wall_clock_punctuation_fires_without_records(make_app):
    fired = []

    class Ticker:
        def init(self, context):
            self.context = context
            self.cancellable = context.schedule(500, Punctuation.WALL_CLOCK_TIME, self.tick)

        def process(self, record):
            pass

        def tick(self, timestamp):
            fired.append(timestamp)
            self.context.forward(Record("tick", str(len(fired)), timestamp))
            if len(fired) == 3:
                self.cancellable.cancel()

    app = make_app()
    (app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
        .process(Ticker, key_serde=serde.STRING, value_serde=serde.STRING).to("out"))
    with TopologyTestDriver(app, wall_clock_ms=1_000_000) as driver:
        driver.advance_wall_clock(0)
        driver.advance_wall_clock(499)  # 1_000_499
        assert fired == []  # one interval after init
        driver.advance_wall_clock(1)  # 1_000_500
        driver.advance_wall_clock(0)  # the same instant: once
        driver.advance_wall_clock(1_600)  # 1_002_100, three intervals late: once, then on the grid (1_002_500)
        driver.advance_wall_clock(399)  # 1_002_499
        driver.advance_wall_clock(1)  # 1_002_500
        driver.advance_wall_clock(7_500)  # 1_010_000: cancelled from inside the third call
        assert fired == [1_000_500, 1_002_100, 1_002_500]
        assert [(r.topic, r.key, r.value, r.timestamp, r.headers) for r in driver.read_output("out")] == [
            ("out", "tick", "1", 1_000_500, None), ("out", "tick", "2", 1_002_100, None),
            ("out", "tick", "3", 1_002_500, None)]


def test_wall_clock_punctuation_runs_only_for_running_tasks(make_app):
    clock = Clock(0)
    tm, producer = build(make_app, _wall_clock_forwarder(), clock)
    tm.partitions_assigned([TopicPartition("in", 0)])  # RESTORING: no processor yet
    clock.now = 10_000
    tm.punctuate()
    assert producer.sent == []
    tm._updater.restored.extend(tm._updater.added)
    tm.handle_restored()  # init now: the first tick is one interval from here
    tm.punctuate()
    assert producer.sent == []
    clock.now = 10_100
    tm.punctuate()
    assert producer.sent == [("out", "w", "10100", 10_100, None)]


def _wall_clock_forwarder():
    class Forwarder:
        def init(self, context):
            context.schedule(100, Punctuation.WALL_CLOCK_TIME,
                             lambda ts: context.forward(Record("w", str(ts), ts)))

        def process(self, record):
            pass

    return Forwarder


def test_punctuation_writes_stores_and_commits_with_the_task(make_app):
    class Counter:
        def init(self, context):
            self.store = context.store("sums")
            context.schedule(100, Punctuation.WALL_CLOCK_TIME, lambda ts: self.store.put("ticks", ts))

        def process(self, record):
            pass

    clock = Clock(0)
    tm, _ = build(make_app, Counter, clock)
    (task,) = running(tm)
    clock.now = 100
    tm.punctuate()
    assert task.stores["sums"].view.get("ticks") == 100
    assert task.dirty_records() == 1  # in the task's uncommitted state: the next commit writes its changelog


def test_revocation_closes_the_instance_and_a_new_assignment_makes_a_fresh_one(make_app):
    tm, producer = build(make_app)
    running(tm)
    tm.process(msgs(("a", "1", 3)))
    first = Summary.made[0]
    tm.partitions_revoked([TopicPartition("in", 0)])
    assert first.closed and not tm.tasks
    running(tm)
    assert len(Summary.made) == 2 and Summary.made[1] is not first and not Summary.made[1].closed
    tm.process(msgs(("a", "2", 4), start=1))
    assert Summary.made[1].punctuated == [4]  # schedules were made again by init()
    assert first.punctuated == [3]
    tm.shutdown(clean=True)
    assert Summary.made[1].closed


def test_rewind_reinitializes_processors_so_undone_punctuations_fire_again(make_app):
    tm, producer = build(make_app)
    (task,) = running(tm)
    tm.process(msgs(("a", "1", 3), ("a", "1", 12)))
    first = Summary.made[0]
    assert first.punctuated == [3, 12]
    tm.rewind([task])  # e.g. an aborted transaction: the input is read again from the last commit
    assert first.closed and len(Summary.made) == 2
    tm.process(msgs(("a", "1", 3), ("a", "1", 12)))
    assert Summary.made[1].punctuated == [3, 12]


def test_restore_from_changelogs_closes_processors_until_running_again(make_app):
    tm, _ = build(make_app)
    (task,) = running(tm)
    tm.restore_from_changelogs([task])
    assert Summary.made[0].closed and task.state is TaskState.RESTORING and not task.processors
    tm._updater.restored.extend(tm._updater.added)
    tm.handle_restored()
    assert len(Summary.made) == 2 and not Summary.made[1].closed


def test_a_failing_punctuation_stops_with_a_punctuation_error(make_app):
    class Failing:
        def init(self, context):
            context.schedule(10, Punctuation.STREAM_TIME, self.boom)

        def process(self, record):
            pass

        def boom(self, timestamp):
            raise ZeroDivisionError("oops")

    tm, _ = build(make_app, Failing)
    running(tm)
    with pytest.raises(PunctuationError, match="STREAM_TIME punctuation at 5") as info:
        tm.process(msgs(("a", "1", 5)))
    assert isinstance(info.value.__cause__, ZeroDivisionError) and info.value.task_id == "0_0"
    closed = []
    Failing.close = lambda self: closed.append(self)
    tm.shutdown(clean=False)  # what the stream thread does when the app fails
    assert len(closed) == 1


def test_forward_with_new_timestamp_and_headers(make_app):
    class Restamp:
        def init(self, context):
            self.context = context

        def process(self, record):
            out = record.with_timestamp(record.timestamp + 1000).with_headers([("h", "v")]).with_key(record.key * 2)
            self.context.forward(out)
            self.context.forward(record.with_headers(None))

    tm, producer = build(make_app, Restamp)
    running(tm)
    tm.process(msgs(("a", "1", 5, [("in", b"x")])))
    assert producer.sent == [("out", "aa", "1", 1005, [("h", b"v")]), ("out", "a", "1", 5, None)]


# ---- errors a user meets ----

def test_a_class_without_process_is_refused(make_app):
    class NoProcess:
        def init(self, context):
            pass

    class Inherits(hotstate.Processor):
        pass

    app = make_app()
    s = app.stream("in", key_serde=serde.STRING)
    for cls in (NoProcess, Inherits):
        with pytest.raises(TopologyError, match="needs a method process"):
            s.process(cls)


@pytest.mark.parametrize("interval, kind, match", [
    (0, Punctuation.STREAM_TIME, "interval"),
    (-10, Punctuation.WALL_CLOCK_TIME, "interval"),
    (10, "STREAM_TIME", "punctuation type"),
    (10, None, "punctuation type"),
])
def test_bad_schedule_arguments_are_refused_in_init(make_app, interval, kind, match):
    class Bad:
        def init(self, context):
            context.schedule(interval, kind, lambda ts: None)

        def process(self, record):
            pass

    tm, _ = build(make_app, Bad)
    with pytest.raises(ValueError, match=match):
        running(tm)


def test_forward_from_init_is_refused(make_app):
    class Eager:
        def init(self, context):
            context.forward(Record("k", "v", 0))

        def process(self, record):
            pass

    tm, _ = build(make_app, Eager)
    with pytest.raises(TopologyError, match="schedule a punctuation"):
        running(tm)


def test_forward_takes_a_record(make_app):
    class Pairs:
        def init(self, context):
            self.context = context

        def process(self, record):
            self.context.forward(record.key, record.value)

    tm, _ = build(make_app, Pairs)
    running(tm)
    with pytest.raises(hotstate.ProcessingError) as info:
        tm.process(msgs(("a", "1", 5)))
    assert isinstance(info.value.__cause__, TypeError)


# ---- records, and the function form ----

def test_record_with_methods_return_new_records():
    r = Record("k", "v", 5, [("h", b"1")], "t", 2, 9)
    r2 = r.with_value("w").with_timestamp(7)
    assert (r.key, r.value, r.timestamp, r.headers) == ("k", "v", 5, [("h", b"1")])
    assert (r2.key, r2.value, r2.timestamp, r2.headers, r2.topic, r2.partition, r2.offset) == (
        "k", "w", 7, [("h", b"1")], "t", 2, 9)
    assert r.with_key("j").key == "j"
    assert r.with_headers({"a": "x", "b": None}).headers == [("a", b"x"), ("b", None)]
    assert r.with_headers([]).headers is None
    with pytest.raises(ValueError, match="timestamp"):
        r.with_timestamp(-1)
    with pytest.raises(ValueError, match="headers"):
        r.with_headers([("a", 3)])
    with pytest.raises(ValueError, match="headers"):
        r.with_headers("ab")


def test_function_form_keeps_headers_and_forwards_records(make_app):
    app = make_app()

    def fn(record, ctx):
        ctx.forward(record.key, record.value)  # the input's timestamp and headers
        ctx.forward(record.with_timestamp(99).with_headers([("new", b"1")]))
        ctx.forward(Record("n", "new"))  # a new record: the current timestamp, no headers

    (app.stream("in", key_serde=serde.STRING, value_serde=serde.STRING)
        .process(fn, key_serde=serde.STRING, value_serde=serde.STRING).to("out"))
    h = Harness(app, "in")
    h.pipe("k", "v", timestamp=5, headers=[("in", b"x")])
    assert [(s.key, s.value, s.timestamp, s.headers) for s in h.sent] == [
        (b"k", b"v", 5, [("in", b"x")]), (b"k", b"v", 99, [("new", b"1")]), (b"n", b"new", 5, None)]


class _FailsOnce:
    calls: list[int] = []

    def init(self, context):
        self.context = context
        context.schedule(10, Punctuation.STREAM_TIME, self.boom)
        context.schedule(10, Punctuation.STREAM_TIME, self.fine)

    def process(self, record):
        pass

    def boom(self, timestamp):
        raise ZeroDivisionError("oops")

    def fine(self, timestamp):
        _FailsOnce.calls.append(timestamp)


def test_processing_handler_continue_skips_a_failing_punctuation(make_app):
    _FailsOnce.calls = []
    tm, _ = build(make_app, _FailsOnce, processing_exception_handler="log_and_continue")
    running(tm)
    tm.process(msgs(("a", "1", 5), ("a", "1", 15)))
    assert _FailsOnce.calls == [5, 15]  # the other schedule fired each time; the failing one went on too
    assert tm._metrics.dropped_records_total == 2


def test_processing_handler_callable_sees_the_punctuation(make_app):
    _FailsOnce.calls = []
    seen = []

    def handler(context, record, exc):
        seen.append((context.topic, context.partition, context.offset, context.timestamp, context.task_id, record,
                     type(exc).__name__))
        return hotstate.ProcessingHandlerResponse.FAIL

    tm, _ = build(make_app, _FailsOnce, processing_exception_handler=handler)
    running(tm)
    with pytest.raises(PunctuationError):
        tm.process(msgs(("a", "1", 5)))
    assert seen == [("", -1, -1, 5, "0_0", None, "ZeroDivisionError")]


def test_a_class_whose_init_takes_arguments_is_refused(make_app):
    class Configured:
        def __init__(self, threshold):
            self.threshold = threshold

        def process(self, record):
            pass

    app = make_app()
    with pytest.raises(TopologyError, match="must take no arguments"):
        app.stream("in", key_serde=serde.STRING).process(Configured)


def test_context_metadata(make_app):
    seen = []

    class Meta:
        def init(self, context):
            self.context = context
            seen.append(("init", context.task_id, context.partition, context.stream_time))

        def process(self, record):
            c = self.context
            seen.append(("process", c.stream_time, c.current_stream_time_ms(), c.current_wall_clock_ms(),
                         record.topic, record.partition, record.offset))

    tm, _ = build(make_app, Meta, Clock(77))
    running(tm, (1,))
    tm.process(msgs(("a", "1", 40), ("a", "1", 30), partition=1))
    assert seen == [("init", "0_1", 1, -1), ("process", 40, 40, 77, "in", 1, 0), ("process", 40, 40, 77, "in", 1, 1)]
    with pytest.raises(KeyError, match="not connected"):
        tm.tasks["0_1"].processors[next(iter(tm.tasks["0_1"].processors))][1].store("other")


def test_a_record_skipped_by_the_handler_still_fires_the_punctuation_it_advanced(make_app):
    class Picky(Summary):
        def process(self, record):
            if record.value == "bad":
                raise ValueError("bad record")
            super().process(record)

    tm, producer = build(make_app, Picky, processing_exception_handler="log_and_continue")
    running(tm)
    tm.process(msgs(("a", "1", 3), ("a", "bad", 25)))
    assert Summary.made[0].punctuated == [3, 25]
    assert tm.tasks["0_0"].next_offsets == {tm.tasks["0_0"].inputs[0]: 2}


def test_forwarding_a_record_without_a_valid_timestamp_is_refused(make_app):
    class NoTime:
        def init(self, context):
            self.context = context

        def process(self, record):
            self.context.forward(Record(record.key, record.value, -5))

    tm, _ = build(make_app, NoTime)
    running(tm)
    with pytest.raises(hotstate.ProcessingError) as info:
        tm.process(msgs(("a", "1", 5)))
    assert "with_timestamp" in str(info.value.__cause__)


def test_a_new_record_without_a_timestamp_takes_the_current_one(make_app):
    class Plain:
        def init(self, context):
            self.context = context
            context.schedule(10, Punctuation.STREAM_TIME, lambda ts: context.forward(Record("p", "punct")))

        def process(self, record):
            self.context.forward(Record("r", "new"))

    tm, producer = build(make_app, Plain)
    running(tm)
    tm.process(msgs(("a", "1", 7, [("in", b"x")]), ("a", "1", 23)))
    assert producer.sent == [("out", "r", "new", 7, None), ("out", "p", "punct", 7, None),
                             ("out", "r", "new", 23, None), ("out", "p", "punct", 23, None)]
