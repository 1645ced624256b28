"""Records larger than Kafka allows (issue 10) without a broker: librdkafka's MSG_SIZE_TOO_LARGE, refused
by the producer at produce() or by the broker in a delivery report, becomes a RecordTooLargeError naming the
store (or topic), key, size and limit; under exactly-once it is neither a fencing nor an abort-and-retry."""
from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

import hotstate
from hotstate import StoreSpec, TopicPartition, serde
from hotstate.kafka.record_size import RecordSizeLimits, Rejected, is_too_large, record_size
from hotstate.observe.metrics import Metrics
from hotstate.runtime.commit import AtLeastOnceCommitter, DeliveryTracker, ExactlyOnceCommitter
from hotstate.runtime.task_manager import TaskManager
from hotstate.state.state_dir import StateDirectory
from test_commit_eos import FakeConsumer as FakeGroupMember
from test_commit_eos import FakeTxnProducer
from test_task_manager import FakeCommitter, FakeConsumer, FakeProducer, FakeUpdater, running
from unit_support import FakeMsg

TOO_LARGE = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large")
CHANGELOG = "unit-app-big-changelog"


class Delivered:
    """A delivery report's message."""

    def __init__(self, topic, partition, key, value, headers=None):
        self._t, self._p, self._k, self._v, self._h = topic, partition, key, value, headers

    def topic(self):
        return self._t

    def partition(self):
        return self._p

    def key(self):
        return self._k

    def value(self):
        return self._v

    def headers(self):
        return self._h


def limits(topic_limit=2000, producer_max=1_000_000):
    return RecordSizeLimits({CHANGELOG: "big"}, producer_max, lambda topic: topic_limit, "127.0.0.1:9092")


def test_is_too_large_and_record_size():
    assert is_too_large(KafkaException(TOO_LARGE)) and is_too_large(TOO_LARGE)
    assert not is_too_large(KafkaException(KafkaError(KafkaError._TIMED_OUT))) and not is_too_large(None)
    assert record_size(b"k", b"vv", [("h", b"123")]) == 1 + 2 + 1 + 3
    assert record_size(None, None) == 0


def test_a_changelog_record_refused_by_the_broker_names_store_key_size_and_limit():
    tracker = DeliveryTracker({CHANGELOG}, limits(topic_limit=2000))
    # librdkafka fails every record of the refused batch: the largest one is named
    tracker(TOO_LARGE, Delivered(CHANGELOG, 3, b"small", b"x"))
    tracker(TOO_LARGE, Delivered(CHANGELOG, 3, b"kbig", b"x" * 5000))
    c = AtLeastOnceCommitter(FakeGroupMember(), FakeTxnProducer([]), tracker, Metrics(), 1.0)
    with pytest.raises(hotstate.RecordTooLargeError) as ei:
        c.flush()
    e = ei.value
    assert isinstance(e, hotstate.HotstateError) and not isinstance(e, KafkaException)
    assert (e.store, e.topic, e.partition, e.key, e.size, e.limit) == ("big", CHANGELOG, 3, b"kbig", 5004, 2000)
    text = str(e)
    for part in ("store 'big'", "b'kbig'", "5004 bytes", "max.message.bytes=2000", CHANGELOG,
                 "kafka-configs", "smaller", "2 records"):
        assert part in text, (part, text)
    assert tracker.too_large == [] and tracker.errors == []  # taken
    c.flush()  # nothing left to report


def test_an_output_record_refused_by_the_broker_names_the_topic():
    tracker = DeliveryTracker({CHANGELOG}, limits(topic_limit=None))
    tracker(TOO_LARGE, Delivered("out", 0, b"k", b"v" * 3000))
    with pytest.raises(hotstate.RecordTooLargeError) as ei:
        tracker.raise_errors()
    assert ei.value.store is None and ei.value.topic == "out" and ei.value.limit is None
    assert "topic 'out'" in str(ei.value) and "max.message.bytes=unknown" in str(ei.value)


def test_a_batch_over_the_limit_of_records_under_it_says_to_lower_the_batch_size():
    tracker = DeliveryTracker(set(), limits(topic_limit=2000))
    for i in range(4):
        tracker(TOO_LARGE, Delivered("out", 0, b"k%d" % i, b"v" * 700))
    with pytest.raises(hotstate.RecordTooLargeError, match="batch.size"):
        tracker.raise_errors()


def test_other_delivery_errors_stay_kafka_exceptions():
    tracker = DeliveryTracker(set(), limits())
    tracker(KafkaError(KafkaError._MSG_TIMED_OUT), Delivered("out", 0, b"k", b"v"))
    with pytest.raises(KafkaException):
        tracker.raise_errors()
    tracker(TOO_LARGE, Delivered("out", 0, b"k", b"v"))
    tracker.take_errors()  # an abort drops them: nothing is reported later
    tracker.raise_errors()


class RefusingProducer(FakeTxnProducer):
    """Refuses, at produce(), any value over ``max_bytes`` (librdkafka's message.max.bytes)."""

    def __init__(self, log, max_bytes):
        super().__init__(log)
        self.max_bytes = max_bytes

    def produce(self, topic, value=None, key=None, **kw):
        self.log.append("produce")
        if len(value or b"") > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Message size too large"))


class FakeStore:
    windowed = False  # a key-value store: its changelog records take the producer's time
    source_changelog = False  # not a table's store: its changelog is written

    def __init__(self, entries):
        self.changelog = TopicPartition(CHANGELOG, 1)
        self.overlay = type("O", (), {"entries": lambda _self: entries})()


def test_a_changelog_record_over_the_producer_limit_names_store_and_producer_limit():
    tracker = DeliveryTracker({CHANGELOG}, limits(producer_max=100))
    c = AtLeastOnceCommitter(FakeGroupMember(), RefusingProducer([], 100), tracker, Metrics(), 1.0)
    task = type("T", (), {"id": "0_1"})()
    pending = {"0_1": [(FakeStore([(b"ok", b"1"), (b"huge", b"x" * 500)]), [(b"ok", b"1"), (b"huge", b"x" * 500)])]}
    with pytest.raises(hotstate.RecordTooLargeError) as ei:
        c.send_changelogs([task], pending)
    e = ei.value
    assert (e.store, e.key, e.size, e.limit) == ("big", b"huge", 504, 100)
    assert "message.max.bytes=100" in str(e) and "producer_config" in str(e)


def test_under_eos_a_refused_record_is_not_a_fencing_nor_retried():
    """Before: the transaction was aborted, a new producer made, the input rewound and reprocessed, until
    'the transactional producer failed fatally 6 times'. Now the error leaves the committer as it is."""
    log, made = [], []
    tracker = DeliveryTracker({CHANGELOG}, limits())

    class Producer(FakeTxnProducer):
        def flush(self, timeout):
            self.log.append("flush")
            tracker(TOO_LARGE, Delivered(CHANGELOG, 0, b"kbig", b"x" * 5000))
            return 0

    c = ExactlyOnceCommitter(FakeGroupMember(), Producer(log), tracker, Metrics(), 1.0,
                             producer_factory=lambda: made.append(1))
    c.begin()
    with pytest.raises(hotstate.RecordTooLargeError, match="store 'big'"):
        c.commit([])
    assert made == [] and "purge" not in log and "commit" not in log  # no new producer, nothing committed


def tm_with(make_app, producer, **cfg):
    app = make_app(**cfg)
    (app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING)
        .process(lambda r, ctx: ctx.forward(r.key, r.value * 300), stores=[StoreSpec("big", kind="memory")])
        .to("out", key_serde=serde.STRING, value_serde=serde.STRING))
    return TaskManager(app.config, app._topology, StateDirectory(app.config.state_dir, app.config.app_id),
                       FakeConsumer(), FakeUpdater(), Metrics(), FakeCommitter(producer))


@pytest.mark.parametrize("handler", ["log_and_fail", "log_and_continue"])
def test_an_output_over_the_producer_limit_stops_the_app_whatever_the_processing_handler(make_app, handler):
    class Refusing(FakeProducer):
        def produce(self, topic, value=None, key=None, timestamp=0, **kw):
            if len(value or b"") > 400:
                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Message size too large"))
            super().produce(topic, value, key, timestamp, **kw)

    tm = tm_with(make_app, Refusing(), processing_exception_handler=handler,
                 producer_config={"message.max.bytes": 400})
    (task,) = running(tm)
    try:
        tm.process([FakeMsg("words", 0, 0, b"a", b"x")])  # 300 bytes: fine
        with pytest.raises(hotstate.RecordTooLargeError) as ei:
            tm.process([FakeMsg("words", 0, 1, b"b", b"xy")])  # 600 bytes
        assert (ei.value.topic, ei.value.key, ei.value.size, ei.value.limit) == ("out", b"b", 601, 400)
        assert task.next_offsets == {task.inputs[0]: 1} and tm._metrics.dropped_records_total == 0  # not skipped
    finally:
        task.close_stores()
