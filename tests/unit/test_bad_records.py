"""Poison records without a broker (issue 10): processing_exception_handler (log_and_fail, log_and_continue,
a callable), dead_letter_topic records and their headers, what a skipped record leaves behind, and the
config checks."""
from __future__ import annotations

import logging

import pytest
from confluent_kafka import KafkaError, KafkaException

import hotstate
from hotstate.runtime.task import TaskState
from hotstate import ProcessingHandlerResponse, StoreSpec, serde
from hotstate.config import Config
from hotstate.observe.metrics import Metrics
from hotstate.runtime.bad_records import dead_letter_headers, exception_name
from hotstate.runtime.task_manager import TaskManager
from hotstate.state.state_dir import StateDirectory
from test_task_manager import FakeCommitter, FakeConsumer, FakeProducer, FakeUpdater, running
from unit_support import FakeMsg

DLQ = "poison-dlq"
ERROR_HEADERS = ["__streams.errors.exception", "__streams.errors.message", "__streams.errors.stacktrace",
                 "__streams.errors.topic", "__streams.errors.partition", "__streams.errors.offset"]


class Poison(Exception):
    pass


class HeaderProducer(FakeProducer):
    """Keeps every produced record with its headers."""

    def __init__(self, fail_with=None):
        super().__init__()
        self.records, self.fail_with = [], fail_with

    def produce(self, topic, value=None, key=None, timestamp=0, headers=None, **kw):
        if self.fail_with is not None and topic == "out":
            raise KafkaException(self.fail_with)
        self.records.append(dict(topic=topic, key=key, value=value, timestamp=timestamp, headers=headers))
        super().produce(topic, value, key, timestamp)

    def to(self, topic):
        return [r for r in self.records if r["topic"] == topic]


def poison_app(make_app, **cfg):
    """Counts per key in store "n" and forwards the count; raises Poison on the value "boom", after the
    store write and the forward (partial work), or before any, on "early"."""
    app = make_app(**cfg)

    def count(record, ctx):
        if record.value == "early":
            raise Poison("early poison")
        store = ctx.store("n")
        n = (store.get(record.key) or 0) + 1
        store.put(record.key, n)
        ctx.forward(record.key, n)
        if record.value == "boom":
            raise Poison(f"poison {record.key}")

    (app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING)
        .process(count, stores=[StoreSpec("n", key_serde=serde.STRING, value_serde=serde.INT64, kind="memory")])
        .to("out", key_serde=serde.STRING, value_serde=serde.INT64))
    return app


@pytest.fixture
def make_tm(make_app):
    made = []

    def make(producer=None, **cfg):
        app = poison_app(make_app, **cfg)
        tm = TaskManager(app.config, app._topology, StateDirectory(app.config.state_dir, app.config.app_id),
                         FakeConsumer(), FakeUpdater(), Metrics(), FakeCommitter(producer or HeaderProducer()))
        made.append(tm)
        (task,) = running(tm)
        return tm, task
    yield make
    for tm in made:
        for t in list(tm.tasks.values()):
            t.close_stores()


def msgs(*values, key=b"k", start=0, headers=None):
    return [FakeMsg("words", 0, start + i, key, v.encode(), timestamp=1000 + i, headers=headers)
            for i, v in enumerate(values)]


# ---- processing_exception_handler ----

def test_log_and_fail_is_the_default_and_stops_at_the_record(make_tm):
    tm, task = make_tm()
    assert tm._config.processing_exception_handler == "log_and_fail"
    with pytest.raises(hotstate.ProcessingError) as ei:
        tm.process(msgs("a", "early", "b"))
    e = ei.value
    assert (e.topic, e.partition, e.offset) == ("words", 0, 1) and isinstance(e.__cause__, Poison)
    assert "processing_exception_handler='log_and_continue'" in str(e)  # says how to skip such records
    assert task.next_offsets == {task.inputs[0]: 1} and tm._metrics.dropped_records_total == 0
    assert tm.producer.to(DLQ) == []


def test_log_and_continue_skips_logs_and_counts_the_record(make_tm, caplog):
    tm, task = make_tm(processing_exception_handler="log_and_continue")
    with caplog.at_level(logging.WARNING, logger="hotstate"):
        tm.process(msgs("a", "early", "b"))
    assert task.next_offsets == {task.inputs[0]: 3}  # the skipped record counts as processed
    m = tm._metrics
    assert (m.records_processed_total, m.dropped_records_total, m.skipped_records_total) == (2, 1, 0)
    assert task.stores["n"].view.get("k") == 2
    assert "skipping record at words[0]@1" in caplog.text and "early poison" in caplog.text
    assert m.snapshot()["dropped_records_total"] == 1


def test_a_skipped_record_keeps_its_partial_store_writes_and_outputs(make_tm):
    """As in Kafka Streams, nothing is rolled back: "boom" counted (store write) and forwarded its count
    before it raised; both stay and are committed with the task."""
    tm, task = make_tm(processing_exception_handler="log_and_continue")
    tm.process(msgs("a", "boom", "b"))
    assert task.stores["n"].view.get("k") == 3
    assert [(r["key"], r["value"]) for r in tm.producer.to("out")] == [
        (b"k", (1).to_bytes(8, "big")), (b"k", (2).to_bytes(8, "big")), (b"k", (3).to_bytes(8, "big"))]
    assert task.stores["n"].overlay.entries() == [(b"k", (3).to_bytes(8, "big"))]  # goes to the changelog
    assert task.next_offsets == {task.inputs[0]: 3} and tm._metrics.dropped_records_total == 1


def test_a_callable_gets_context_record_and_exception_and_decides(make_tm):
    seen = []

    def handler(context, record, exception):
        seen.append((context, record, exception))
        return ProcessingHandlerResponse.CONTINUE if record.key == "k" else ProcessingHandlerResponse.FAIL

    tm, task = make_tm(processing_exception_handler=handler)
    tm.process(msgs("early", headers=[("trace", b"t1")], start=7))
    ((context, record, exception),) = seen
    assert isinstance(context, hotstate.ErrorHandlerContext) and isinstance(record, hotstate.Record)
    assert (context.topic, context.partition, context.offset, context.timestamp) == ("words", 0, 7, 1000)
    assert (context.task_id, context.headers) == ("0_0", [("trace", b"t1")])
    assert (context.source_raw_key, context.source_raw_value) == (b"k", b"early")
    assert (record.key, record.value, record.offset, record.headers) == ("k", "early", 7, [("trace", b"t1")])
    assert isinstance(exception, Poison)
    assert task.next_offsets == {task.inputs[0]: 8} and tm._metrics.dropped_records_total == 1
    with pytest.raises(hotstate.ProcessingError) as ei:
        tm.process(msgs("early", key=b"other", start=8))
    assert ei.value.offset == 8 and ei.value.handler_error is None
    assert task.next_offsets == {task.inputs[0]: 8}


@pytest.mark.parametrize("answer", ["raises", "returns-junk"])
def test_a_callable_that_raises_or_answers_junk_counts_as_fail(make_tm, answer, caplog):
    def handler(context, record, exception):
        if answer == "raises":
            raise RuntimeError("handler bug")
        return "CONTINUE"  # a string, not the enum

    tm, task = make_tm(processing_exception_handler=handler, dead_letter_topic=DLQ)
    with caplog.at_level(logging.ERROR, logger="hotstate"), pytest.raises(hotstate.ProcessingError) as ei:
        tm.process(msgs("early"))
    e = ei.value
    assert isinstance(e.__cause__, Poison)  # what user code raised
    want = RuntimeError if answer == "raises" else TypeError
    assert isinstance(e.handler_error, want) and "counts as 'fail'" in str(e)
    assert task.next_offsets == {} and tm._metrics.dropped_records_total == 0
    assert "counts as FAIL" in caplog.text
    assert len(tm.producer.to(DLQ)) == 1  # FAIL with a dead-letter topic: the record goes there first


def test_a_producer_failure_is_never_skipped(make_tm):
    err = KafkaError(KafkaError._UNKNOWN_TOPIC, "no such topic")
    tm, task = make_tm(producer=HeaderProducer(fail_with=err), processing_exception_handler="log_and_continue",
                       dead_letter_topic=DLQ)
    with pytest.raises(hotstate.ProcessingError) as ei:
        tm.process(msgs("a"))
    assert isinstance(ei.value.__cause__, KafkaException)
    assert task.next_offsets == {} and tm.producer.to(DLQ) == []


def test_a_store_failure_is_never_skipped(make_tm):
    tm, task = make_tm(processing_exception_handler="log_and_continue", dead_letter_topic=DLQ)

    def corrupted(key):
        raise hotstate.StoreCorruptedError("checksum mismatch")

    task.stores["n"].backend.get = corrupted
    tm.process(msgs("a"))  # not the record's fault: the task is revived (restored), see test_store_faults.py
    assert task.state is TaskState.RESTORING and tm._metrics.store_corruptions_total == 1
    assert task.next_offsets == {} and tm.producer.to(DLQ) == [] and tm._metrics.dropped_records_total == 0


# ---- dead_letter_topic ----

def check_dead_letter(rec, key, value, exc_name, message, offset, headers_before=()):
    assert (rec["topic"], rec["key"], rec["value"]) == (DLQ, key, value)
    names = [n for n, _ in rec["headers"]]
    assert names == [n for n, _ in headers_before] + ERROR_HEADERS
    h = dict(rec["headers"])
    for name, data in headers_before:
        assert h[name] == data
    assert h["__streams.errors.exception"] == exc_name.encode()
    assert h["__streams.errors.message"] == message.encode()
    assert h["__streams.errors.topic"] == b"words" and h["__streams.errors.partition"] == b"0"
    assert h["__streams.errors.offset"] == str(offset).encode()
    stack = h["__streams.errors.stacktrace"].decode()
    assert stack.startswith("Traceback (most recent call last)") and exc_name.split(".")[-1] in stack


@pytest.mark.parametrize("handler", ["log_and_continue", "log_and_fail"])
def test_a_failed_record_goes_to_the_dead_letter_topic_as_consumed(make_tm, handler):
    tm, task = make_tm(processing_exception_handler=handler, dead_letter_topic=DLQ)
    batch = msgs("a", "boom", "b", headers=[("trace", b"t1"), ("empty", b"")])
    if handler == "log_and_fail":
        with pytest.raises(hotstate.ProcessingError):
            tm.process(batch)
    else:
        tm.process(batch)
    (rec,) = tm.producer.to(DLQ)
    check_dead_letter(rec, b"k", b"boom", "test_bad_records.Poison", "poison k", 1,
                      headers_before=[("trace", b"t1"), ("empty", b"")])
    assert rec["timestamp"] == 1001  # the input record's
    assert tm._metrics.dead_letter_records_total == 1
    assert tm._metrics.snapshot()["dead_letter_records_total"] == 1


@pytest.mark.parametrize("handler", ["log_and_continue", "log_and_fail"])
def test_an_undecodable_record_goes_to_the_dead_letter_topic_as_consumed(make_app, handler):
    app = make_app(deserialization_exception_handler=handler, dead_letter_topic=DLQ)
    app.stream("words", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key().count(
        StoreSpec("c", kind="memory"))
    tm = TaskManager(app.config, app._topology, StateDirectory(app.config.state_dir, "unit-app"), FakeConsumer(),
                     FakeUpdater(), Metrics(), FakeCommitter(HeaderProducer()))
    (task,) = running(tm)
    try:
        batch = [FakeMsg("words", 0, 4, b"k", (1).to_bytes(8, "big")), FakeMsg("words", 0, 5, b"k", b"\x01\x02")]
        if handler == "log_and_fail":
            with pytest.raises(hotstate.DeserializationError):
                tm.process(batch)
        else:
            tm.process(batch)
            assert task.next_offsets == {task.inputs[0]: 6}
            assert (tm._metrics.skipped_records_total, tm._metrics.dropped_records_total) == (1, 1)
        (rec,) = tm.producer.to(DLQ)
        check_dead_letter(rec, b"k", b"\x01\x02", "ValueError", "INT64 serde expects 8 bytes, got 2", 5)
    finally:
        task.close_stores()


def test_no_dead_letter_topic_no_dead_letter_records(make_tm):
    tm, _ = make_tm(processing_exception_handler="log_and_continue")
    tm.process(msgs("boom"))
    assert [r["topic"] for r in tm.producer.records] == ["out"] and tm._metrics.dead_letter_records_total == 0


def test_dead_letter_headers_and_exception_names():
    try:
        raise Poison("bad ünïcode \ud800")
    except Poison as exc:
        headers = dead_letter_headers(None, exc, "t", 3, 42)
    h = dict(headers)
    assert [n for n, _ in headers] == ERROR_HEADERS
    assert h["__streams.errors.message"] == "bad ünïcode \\ud800".encode()  # always valid UTF-8
    assert exception_name(ValueError()) == "ValueError"
    assert exception_name(Poison()) == "test_bad_records.Poison"
    assert exception_name(hotstate.ConfigError("x")) == "hotstate.errors.ConfigError"


# ---- config ----

REQUIRED = dict(app_id="unit-app", bootstrap_servers="127.0.0.1:1")


@pytest.mark.parametrize("value", ["ignore", "LOG_AND_CONTINUE", 5, None, ProcessingHandlerResponse.CONTINUE,
                                   lambda ctx, record: ProcessingHandlerResponse.CONTINUE,
                                   lambda: ProcessingHandlerResponse.CONTINUE])
def test_invalid_processing_handler_is_a_config_error(value):
    with pytest.raises(hotstate.ConfigError, match="processing_exception_handler") as ei:
        Config.from_kwargs(**REQUIRED, processing_exception_handler=value)
    assert "log_and_continue" in str(ei.value) or "three arguments" in str(ei.value)


def test_valid_processing_handlers():
    class Handler:
        def __call__(self, context, record, exception, *rest):
            return ProcessingHandlerResponse.FAIL

    for value in ("log_and_fail", "log_and_continue", lambda c, r, e: ProcessingHandlerResponse.FAIL, Handler(),
                  lambda *args: ProcessingHandlerResponse.FAIL):
        assert Config.from_kwargs(**REQUIRED, processing_exception_handler=value).processing_exception_handler is value
    assert Config.from_kwargs(**REQUIRED).dead_letter_topic is None


@pytest.mark.parametrize("value", ["", "has space", "..", "x" * 250, 7, b"bytes"])
def test_invalid_dead_letter_topic_is_a_config_error(value):
    with pytest.raises(hotstate.ConfigError, match="dead_letter_topic"):
        Config.from_kwargs(**REQUIRED, dead_letter_topic=value)
