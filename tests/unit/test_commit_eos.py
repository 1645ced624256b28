"""The exactly-once committer's steps and failure handling, with a fake transactional producer."""
from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from hotstate.observe.metrics import Metrics
from hotstate.runtime.commit import (DeliveryTracker, ExactlyOnceCommitter, ProducerFenced, TransactionAborted,
                                     TransactionalProducerStuck, TransactionOutcomeUnknown, is_fenced)


class FakeTxnProducer:
    def __init__(self, log, fail_at=None, error=None, failures=1_000):
        self.log, self.fail_at, self.error, self.failures = log, fail_at, error, failures

    def _step(self, name):
        self.log.append(name)
        if name == self.fail_at and self.failures > 0:
            self.failures -= 1
            raise KafkaException(self.error)

    def init_transactions(self, timeout):
        self._step("init")

    def begin_transaction(self):
        self._step("begin")

    def produce(self, *a, **kw):
        self._step("produce")

    def poll(self, timeout):
        return 0

    def flush(self, timeout):
        self._step("flush")
        return 0

    def send_offsets_to_transaction(self, offsets, metadata, timeout):
        self._step("send_offsets")

    def commit_transaction(self, timeout):
        self._step("commit")

    def abort_transaction(self, timeout):
        self._step("abort")

    def purge(self):
        self.log.append("purge")


class FakeConsumer:
    def consumer_group_metadata(self):
        return b"cgmd"



def fake_task():
    """A task with one input (t[0]) processed up to offset 5 and committed at 1, with Task's offset bookkeeping."""
    from hotstate.records import TopicPartition
    task = type("T", (), {"id": "0_0", "stores": {}, "inputs": (TopicPartition("t", 0),),
                          "next_offsets": {TopicPartition("t", 0): 5}, "committed_offsets": {TopicPartition("t", 0): 1},
                          "needs_commit": lambda self: True,
                          "offsets_to_commit": lambda self: dict(self.next_offsets),
                          "mark_committed": lambda self: setattr(self, "committed_offsets", dict(self.next_offsets))})()
    return task

def committer(log, clock=None, **producer):
    made = []

    def factory():
        p = FakeTxnProducer(log)
        made.append(p)
        return p

    c = ExactlyOnceCommitter(FakeConsumer(), FakeTxnProducer(log, **producer), DeliveryTracker(set()), Metrics(),
                             1.0, producer_factory=factory, **({"clock": clock} if clock else {}))
    return c, made


def test_nothing_is_committed_outside_a_transaction():
    log = []
    c, _ = committer(log)
    c.commit([])
    assert log == []
    c.begin()
    c.begin()  # idempotent while open
    c.commit([])
    assert log == ["begin", "flush", "commit"]


def test_an_abortable_failure_replaces_the_producer_and_asks_for_a_rewind():
    log = []
    c, made = committer(log, fail_at="send_offsets", error=KafkaError(KafkaError.UNKNOWN_MEMBER_ID, "zombie"))
    c.begin()
    from hotstate.records import TopicPartition
    task = fake_task()
    with pytest.raises(TransactionAborted):
        c.commit([task])
    # A new producer's init_transactions aborts the transaction on the coordinator (see commit.py).
    assert log == ["begin", "flush", "send_offsets", "purge", "init"]
    assert len(made) == 1 and c.producer is made[0]
    assert task.committed_offsets == {task.inputs[0]: 1}  # not marked committed


def test_a_fatal_failure_asks_for_a_new_producer_within_a_budget():
    log = []
    now = [0.0]
    fatal = KafkaError(KafkaError.INVALID_TXN_STATE, "gone", fatal=True)
    # At flush: before commit_transaction (a fatal error there is an unknown outcome, see below).
    c, made = committer(log, clock=lambda: now[0], fail_at="flush", error=fatal)
    assert is_fenced(KafkaException(fatal)) and not is_fenced(KafkaException(KafkaError(KafkaError._TIMED_OUT)))
    c.begin()
    with pytest.raises(ProducerFenced):
        c.commit([])
    for _ in range(ExactlyOnceCommitter.RECREATE_MAX):
        c.recreate_producer()
        now[0] += 1
    assert len(made) == ExactlyOnceCommitter.RECREATE_MAX and log.count("init") == ExactlyOnceCommitter.RECREATE_MAX
    with pytest.raises(RuntimeError, match="failed fatally"):
        c.recreate_producer()
    now[0] += ExactlyOnceCommitter.RECREATE_WINDOW_S + 1  # an old burst does not count against a new one
    c.recreate_producer()


def test_a_stale_group_member_rejoins_and_its_refused_offsets_do_not_use_up_the_producer_budget():
    """After a broker restart the group forgets the member: every commit is refused (UNKNOWN_MEMBER_ID) until
    it rejoins. That asks the member to rejoin and never counts as a failing producer."""
    from hotstate.records import TopicPartition
    log = []

    class Member(FakeConsumer):
        rejoins = 0

        def request_rejoin(self):
            self.rejoins += 1

    member = Member()
    stale = KafkaError(KafkaError.UNKNOWN_MEMBER_ID, "the group forgot this member")
    c = ExactlyOnceCommitter(member, FakeTxnProducer(log, fail_at="send_offsets", error=stale), DeliveryTracker(set()),
                             Metrics(), 1.0, producer_factory=lambda: FakeTxnProducer(log, fail_at="send_offsets",
                                                                                       error=stale))
    task = fake_task()
    for _ in range(ExactlyOnceCommitter.RECREATE_MAX + 3):
        c.begin()
        with pytest.raises(TransactionAborted):
            c.commit([task])
    assert member.rejoins == ExactlyOnceCommitter.RECREATE_MAX + 3
    assert log.count("init") == ExactlyOnceCommitter.RECREATE_MAX + 3


def _task():
    from hotstate.records import TopicPartition
    return fake_task()


@pytest.mark.parametrize("error", [KafkaError(KafkaError._TIMED_OUT, "no answer", retriable=True),
                                   KafkaError(KafkaError.INVALID_TXN_STATE, "gone", fatal=True),
                                   KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True)])
def test_a_failed_commit_transaction_is_an_unknown_outcome_settled_by_a_new_producer(error):
    """After commit_transaction the coordinator may have written PrepareCommit: the outcome is unknown, whatever
    the error. A new producer's init_transactions settles it; the caller must restore, not rewind."""
    log = []
    c, made = committer(log, fail_at="commit", error=error)
    c.begin()
    task = _task()
    with pytest.raises(TransactionOutcomeUnknown):
        c.commit([task])
    assert log[-2:] == ["purge", "init"] and c.producer is made[0]  # init_transactions ran before the raise
    assert task.committed_offsets == {task.inputs[0]: 1}  # not marked committed: the caller reads the group's offsets


def test_a_retriable_commit_failure_is_retried_before_the_outcome_counts_as_unknown():
    log = []
    c, made = committer(log, fail_at="commit", error=KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True),
                        failures=2)
    c.begin()
    task = _task()
    c.commit([task])
    assert log.count("commit") == 3 and made == [] and task.committed_offsets == {task.inputs[0]: 5}


def test_failures_before_commit_transaction_are_known_aborts():
    for step in ("flush", "send_offsets"):
        log = []
        c, _ = committer(log, fail_at=step, error=KafkaError(KafkaError._TIMED_OUT, "outage"))
        c.begin()
        with pytest.raises(TransactionAborted):
            c.commit([_task()])
        assert "commit" not in log


class HangingProducer(FakeTxnProducer):
    """A producer whose call ``hang_at`` never returns, whatever its timeout (librdkafka issues 5456/5511: a
    coordinator request lost across a broker restart), until ``release`` is set."""

    def __init__(self, log, hang_at):
        super().__init__(log)
        self.hang_at = hang_at
        self.release = threading.Event()

    def _step(self, name):
        super()._step(name)
        if name == self.hang_at:
            self.release.wait(30)


def hanging_committer(log, hang_at, monkeypatch):
    import hotstate.runtime.commit as commit_module

    monkeypatch.setattr(commit_module, "HANG_GRACE_S", 0.2, raising=False)
    made = []

    def factory():
        made.append(FakeTxnProducer(log))
        return made[-1]

    stuck = HangingProducer(log, hang_at)
    # The calls' own timeout (60 s in the app) bounds the wait.
    c = ExactlyOnceCommitter(FakeConsumer(), stuck, DeliveryTracker(set()), Metrics(), 0.1,
                             producer_factory=factory)
    return c, stuck, made


def one_task():
    from hotstate.records import TopicPartition
    return fake_task()


def commit_in_thread(c, task, within_s):
    """Runs c.commit([task]) on a thread; returns what it raised, or fails if it did not return in time."""
    out: list = []

    def run():
        try:
            c.commit([task])
            out.append(None)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            out.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(within_s)
    assert out, f"commit did not return within {within_s}s: a hung transactional call hangs the stream thread"
    return out[0]


@pytest.mark.parametrize("hang_at", ["send_offsets", "commit"])
def test_a_transactional_call_that_never_returns_is_given_up_and_a_new_producer_settles_it(monkeypatch, hang_at):
    """Bounded by the call's own timeout (+ grace): the stuck producer is left alone (no purge, no call: a thread
    is inside it), a new one's init_transactions fences it and settles the transaction, and the caller is told to
    restore (TransactionOutcomeUnknown), not to trust the overlay; the stores are not written."""
    log = []
    c, stuck, made = hanging_committer(log, hang_at, monkeypatch)
    c.begin()
    task = one_task()
    try:
        exc = commit_in_thread(c, task, within_s=5)
        assert isinstance(exc, TransactionOutcomeUnknown), exc
        assert isinstance(exc.__cause__, TransactionalProducerStuck)
        # (one log for both producers) nothing was asked of the stuck one after its call; the new one ran init
        assert len(made) == 1 and c.producer is made[0] and log[-2:] == [hang_at, "init"] and "purge" not in log
        assert task.committed_offsets == {task.inputs[0]: 1}
        assert c.abandoned == 1 and c._metrics.transactional_producers_abandoned_total == 1
        c.begin()  # the new producer carries on
        assert log[-1] == "begin"
    finally:
        stuck.release.set()


def test_an_abort_that_never_returns_is_given_up_too(monkeypatch):
    log = []
    c, stuck, made = hanging_committer(log, "abort", monkeypatch)
    c.begin()
    try:
        c.abort()  # returns: the new producer's init_transactions aborted the transaction
        assert len(made) == 1 and c.producer is made[0] and log[-2:] == ["abort", "init"]
        assert "purge" not in log and c.abandoned == 1
    finally:
        stuck.release.set()


def always_stuck_committer(monkeypatch):
    """A committer each of whose producers hangs in send_offsets until released; returns it and its producers."""
    import hotstate.runtime.commit as commit_module
    monkeypatch.setattr(commit_module, "HANG_GRACE_S", 0.1, raising=False)
    log: list = []
    stuck: list = []

    def factory():
        stuck.append(HangingProducer(log, "send_offsets"))
        return stuck[-1]

    return ExactlyOnceCommitter(FakeConsumer(), factory(), DeliveryTracker(set()), Metrics(), 0.05,
                                producer_factory=factory), stuck


def test_past_abandon_max_stuck_producers_the_app_stops_instead_of_leaking_more(monkeypatch):
    """Each given-up producer stays alive with its call: after ABANDON_MAX of them the error is fatal."""
    c, stuck = always_stuck_committer(monkeypatch)
    try:
        for _ in range(ExactlyOnceCommitter.ABANDON_MAX):
            c.begin()
            assert isinstance(commit_in_thread(c, one_task(), within_s=5), TransactionOutcomeUnknown)
        c.begin()
        exc = commit_in_thread(c, one_task(), within_s=5)
        assert isinstance(exc, TransactionalProducerStuck), exc
        assert "restart" in str(exc) and c.abandoned == ExactlyOnceCommitter.ABANDON_MAX + 1
        assert len(stuck) == ExactlyOnceCommitter.ABANDON_MAX + 1  # no producer made after the last give-up
    finally:
        for p in stuck:
            p.release.set()


def test_a_given_up_call_that_returns_later_frees_its_place(monkeypatch):
    """Only calls still inside their producers count toward ABANDON_MAX: one that returned (a call delayed by a
    broker restart, not lost) ended with its client."""
    c, stuck = always_stuck_committer(monkeypatch)
    try:
        for _ in range(ExactlyOnceCommitter.ABANDON_MAX):
            c.begin()
            assert isinstance(commit_in_thread(c, one_task(), within_s=5), TransactionOutcomeUnknown)
        stuck[0].release.set()  # the first given-up call returns, and its thread ends
        deadline = time.monotonic() + 5
        while len(c._stuck) == ExactlyOnceCommitter.ABANDON_MAX and c._stuck[0].is_alive():
            assert time.monotonic() < deadline, "the released call's thread did not end"
            time.sleep(0.01)
        c.begin()
        assert isinstance(commit_in_thread(c, one_task(), within_s=5), TransactionOutcomeUnknown)
        assert c.abandoned == ExactlyOnceCommitter.ABANDON_MAX + 1
    finally:
        for p in stuck:
            p.release.set()
