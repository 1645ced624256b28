"""The at-least-once commit steps with fake clients: order, what each step writes, and failure paths
that must leave the store no further than its changelog."""
from __future__ import annotations

import logging
import struct

import pytest
from confluent_kafka import KafkaError, KafkaException

from hotstate import serde
from hotstate.observe.metrics import Metrics
from hotstate.runtime.commit import AtLeastOnceCommitter, DeliveryTracker, TaskMigrated
from unit_support import FakeMsg, Harness

CL = "unit-app-c-changelog"


def i64(n: int) -> bytes:
    return struct.pack(">q", n)


class FakeProducer:
    """Records produce calls; flush 'delivers' them, assigning offsets per partition from ``next_offsets``."""

    def __init__(self, events, tracker, next_offsets=None, remaining=0, error=None):
        self.events, self.tracker = events, tracker
        self.next_offsets = dict(next_offsets or {})
        self.remaining, self.error = remaining, error
        self.queue = []

    def produce(self, topic, value=None, key=None, partition=-1, **kw):
        self.events.append(("produce", topic, partition, key, value))
        self.queue.append((topic, partition, key, value))

    def poll(self, timeout):
        return 0

    def flush(self, timeout):
        self.events.append(("flush",))
        if self.remaining:
            return self.remaining
        for topic, partition, key, value in self.queue:
            if self.error is not None:
                self.tracker(self.error, None)
                continue
            off = self.next_offsets.get((topic, partition), 0)
            self.next_offsets[(topic, partition)] = off + 1
            self.tracker(None, FakeMsg(topic, partition, off, key, value))
        self.queue = []
        return 0


class FakeConsumer:
    """The group member as the committer sees it. ``fail``: the commit raises (True: a transient error, or the
    given error code); ``member``: whether it still knows a valid generation."""

    def __init__(self, events, fail=False, member=True):
        self.events, self.fail, self.member = events, fail, member

    def has_generation(self):
        return self.member

    def commit(self, offsets=None, asynchronous=True):
        assert asynchronous is False, "input offsets must be committed synchronously"
        self.events.append(("commit", [(o.topic, o.partition, o.offset) for o in offsets]))
        if self.fail is True:
            raise KafkaException(KafkaError(KafkaError._NO_OFFSET, "rebalanced"))
        if self.fail:
            raise KafkaException(KafkaError(self.fail, "refused"))


def counting_app(make_app):
    app = make_app()
    app.stream("words", key_serde=serde.STRING, value_serde=serde.STRING).group_by_key().count("c")
    return app


def record_backend_writes(h, events):
    store = h.task.stores["c"]
    inner = store.backend.write

    def write(entries, offset):
        events.append(("write", list(entries), offset))
        inner(entries, offset)
    store.backend.write = write


def setup(make_app, next_offsets=None, remaining=0, error=None, consumer_fails=False, member=True):
    events = []
    h = Harness(counting_app(make_app), "words")
    record_backend_writes(h, events)
    tracker = DeliveryTracker({CL})
    producer = FakeProducer(events, tracker, next_offsets, remaining, error)
    metrics = Metrics()
    committer = AtLeastOnceCommitter(FakeConsumer(events, consumer_fails, member), producer, tracker, metrics,
                                     timeout_s=1)
    return h, events, committer, metrics


def test_commit_steps_in_order(make_app):
    h, events, committer, metrics = setup(make_app, next_offsets={(CL, 0): 40})
    for w in ("a", "b", "a"):
        h.pipe(w, "")
    assert committer.commit([h.task]) == [h.task]  # its input is committed: its state may be snapshotted
    assert events == [
        ("flush",),  # outputs first: the changelog never runs ahead of the output
        ("produce", CL, 0, b"a", i64(2)),   # one changelog record per dirty key, latest value
        ("produce", CL, 0, b"b", i64(1)),
        ("flush",),
        ("commit", [("words", 0, 3)]),  # fenced by the generation, before the store takes the new offset
        ("write", [(b"a", i64(2)), (b"b", i64(1))], 42),  # offset = last delivered changelog offset + 1
    ]
    store = h.task.stores["c"]
    assert len(store.overlay) == 0
    assert store.backend.changelog_offset() == 42 and store.backend.get(b"a") == i64(2)
    assert h.task.committed_offsets == {h.task.inputs[0]: 3} and not h.task.needs_commit()
    assert metrics.commits_total == 1


def test_deletes_reach_the_changelog_as_tombstones(make_app):
    h, events, committer, _ = setup(make_app)
    h.pipe("a", "")
    committer.commit([h.task])
    h.store("c").delete("a")
    committer.commit([h.task])
    assert ("produce", CL, 0, b"a", None) in events
    assert h.task.stores["c"].backend.get(b"a") is None
    assert h.task.stores["c"].backend.changelog_offset() == 2


def test_nothing_to_commit_does_nothing(make_app):
    h, events, committer, metrics = setup(make_app)
    assert committer.commit([h.task]) == []  # no input of it committed now: nothing to snapshot
    assert events == [("flush",)]
    assert h.task.stores["c"].backend.changelog_offset() is None


def test_flush_timeout_leaves_store_and_offsets_untouched(make_app):
    h, events, committer, _ = setup(make_app, remaining=2)
    h.pipe("a", "")
    with pytest.raises(KafkaException, match="not delivered"):
        committer.commit([h.task])
    assert not any(e[0] in ("write", "commit") for e in events)
    assert h.task.stores["c"].backend.changelog_offset() is None
    assert h.store("c").get("a") == 1  # still readable from the overlay
    assert h.task.committed_offsets == {}


def test_delivery_error_leaves_store_and_offsets_untouched(make_app):
    h, events, committer, _ = setup(make_app, error=KafkaError(KafkaError._MSG_TIMED_OUT))
    h.pipe("a", "")
    with pytest.raises(KafkaException):
        committer.commit([h.task])
    assert not any(e[0] in ("write", "commit") for e in events)
    assert h.task.committed_offsets == {}


def test_missing_delivery_report_raises(make_app):
    h, _, committer, _ = setup(make_app)
    h.pipe("a", "")
    committer._tracker = DeliveryTracker(set())  # reports for no changelog
    committer.producer.tracker = committer._tracker
    with pytest.raises(RuntimeError, match="no delivery report"):
        committer.commit([h.task])
    assert h.task.stores["c"].backend.changelog_offset() is None


def test_offset_commit_failure_is_logged_and_retried_next_time(make_app, caplog):
    h, events, committer, _ = setup(make_app, consumer_fails=True)
    h.pipe("a", "")
    with caplog.at_level(logging.WARNING):
        shippable = committer.commit([h.task])
    assert h.task.stores["c"].backend.changelog_offset() == 1  # stores were written before
    assert shippable == [], "state whose input offsets are not committed must never be snapshotted"
    assert h.task.committed_offsets == {} and h.task.needs_commit()
    assert "processed again" in caplog.text
    assert committer._metrics.commits_total == 0  # commit_total counts only commits Kafka took


@pytest.mark.parametrize("code", [KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID,
                                  KafkaError.REBALANCE_IN_PROGRESS, KafkaError.FENCED_INSTANCE_ID])
def test_a_fenced_offset_commit_leaves_the_store_offset_unchanged_and_drops_the_writes(make_app, code):
    """A zombie (frozen past its session, then resumed) must not record a stored offset that covers changelog
    records it never applied (the new owner's): its uncommitted writes go, and its tasks must close as lost."""
    h, events, committer, metrics = setup(make_app, next_offsets={(CL, 0): 40})
    h.pipe("a", "")
    committer.commit([h.task])  # committed state: a=1 at changelog offset 41, input offset 1
    committer._consumer.fail = code
    events.clear()
    h.pipe("a", "")
    with pytest.raises(TaskMigrated, match="closed as lost"):
        committer.commit([h.task])
    assert not any(e[0] == "write" for e in events)
    store = h.task.stores["c"]
    assert store.backend.changelog_offset() == 41 and store.backend.get(b"a") == i64(1)
    assert len(store.overlay) == 0  # the writes are dropped: nothing may go on from them
    assert h.task.committed_offsets == {h.task.inputs[0]: 1} and metrics.commits_total == 1


def test_a_member_without_a_generation_sends_no_changelog_records(make_app):
    """It knows its offsets would be refused: nothing goes to the changelogs (step 1 is skipped)."""
    h, events, committer, _ = setup(make_app, member=False)
    h.pipe("a", "")
    with pytest.raises(TaskMigrated):
        committer.commit([h.task])
    assert not any(e[0] in ("produce", "commit", "write") for e in events)
    assert h.task.stores["c"].backend.changelog_offset() is None and len(h.task.stores["c"].overlay) == 0


def test_a_member_without_a_generation_and_nothing_to_commit_does_nothing(make_app):
    h, events, committer, _ = setup(make_app, member=False)
    committer.commit([h.task])
    assert not any(e[0] in ("produce", "commit", "write") for e in events)


def test_delivery_tracker_keeps_max_offset_of_changelogs_only():
    t = DeliveryTracker({"cl"})
    for topic, p, off in (("cl", 0, 5), ("cl", 0, 3), ("cl", 1, 7), ("out", 0, 99)):
        t(None, FakeMsg(topic, p, off, None, None))
    assert t.last_offsets == {("cl", 0): 5, ("cl", 1): 7}
    err = KafkaError(KafkaError._MSG_TIMED_OUT)
    t(err, None)
    assert t.take_errors() == [err]
    assert t.take_errors() == []
