"""Exactly-once v2 against the real broker: exact counts, aborted work invisible, stores kept."""
from __future__ import annotations

import gc
import random
import weakref

import pytest

import hotstate
from hotstate import serde
from kafka_helpers import RecordingListener, int64, true_counts, utf8, wait_for, wait_processed, word_records, words

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 4


def eos_word_count(kafka, app_id, state_dir, source, sink, listener=None, **config):
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       processing_guarantee="exactly_once_v2", **config)
    (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
        .group_by_key().count(store="word-counts")
        .to_stream().to(sink, value_serde=serde.INT64))
    if listener is not None:
        app.set_restore_listener(listener)
    return app


def test_eos_counts_are_exact_and_a_clean_restart_replays_nothing(kafka, tmp_state_dir):
    source = kafka.create_topic(partitions=PARTITIONS, prefix="eos-words")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="eos-counts")
    app_id = kafka.app_id("eos-wc")
    recs = word_records(random.Random(7), words(500), 6000)
    kafka.produce(source, recs, partitions=PARTITIONS)
    truth = true_counts(recs)

    app = eos_word_count(kafka, app_id, tmp_state_dir, source, sink)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        assert app.config.commit_interval_ms == 100  # Kafka Streams' EOS default
        wait_processed(app, len(recs))
        wait_for(lambda: kafka.read_table(sink) == dict(truth), "exact counts in the output (read_committed)", 60, 0.3)
        store = app.store("word-counts")
        assert {w: store.get(w) for w in truth} == dict(truth)
    finally:
        assert app.close()

    listener = RecordingListener()
    app = eos_word_count(kafka, app_id, tmp_state_dir, source, sink, listener=listener)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        # A start may cross the last commit marker, but replays no record.
        assert listener.total_restored() == 0, listener.events
        ends = kafka.ends(kafka.changelog(app_id, "word-counts"))
        for t in app.tasks():
            info = t.stores["word-counts"]
            assert info.changelog_offset == ends[info.changelog.partition], (t, ends)
    finally:
        assert app.close()


def test_user_error_aborts_the_transaction_and_nothing_partial_is_visible(kafka, tmp_state_dir):
    source = kafka.create_topic(partitions=1, prefix="eos-poison")
    sink = kafka.create_topic(partitions=1, prefix="eos-poison-out")
    app_id = kafka.app_id("eos-poison")
    good = [(f"k{i % 10}", "ok") for i in range(100)]
    kafka.produce(source, good + [("k0", "boom")], partitions=1)

    def build(fail_on_boom: bool) -> hotstate.App:
        def count(record, ctx):
            if record.value == "boom":
                if fail_on_boom:
                    raise ValueError("poison record")
                return
            store = ctx.store("n")
            n = (store.get(record.key) or 0) + 1
            store.put(record.key, n)
            ctx.forward(record.key, n)

        app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_state_dir),
                           processing_guarantee="exactly_once_v2", commit_interval_ms=60_000,
                           transaction_timeout_ms=120_000)
        (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
            .process(count, stores=[hotstate.StoreSpec("n", serde.STRING, serde.JSON)],
                     key_serde=serde.STRING, value_serde=serde.INT64)
            .to(sink))
        return app

    app = build(fail_on_boom=True)
    app.start()
    try:
        with pytest.raises(hotstate.HotstateError):
            app.wait_until_running(timeout_s=60)
            wait_processed(app, 10_000, timeout_s=60)  # never reached: the poison record fails the app
        err = app.error()
        assert isinstance(err, hotstate.ProcessingError), repr(err)
        assert (err.topic, err.partition, err.offset) == (source, 0, 100)
        assert app.state is hotstate.AppState.ERROR
    finally:
        app.close()
    # The 100 good records were processed in the aborted transaction: nothing of them is visible.
    assert kafka.read_all(sink) == []
    assert kafka.read_all(kafka.changelog(app_id, "n")) == []

    # Restart with the poison skipped: counts start from zero (the store holds nothing of the aborted work).
    app = build(fail_on_boom=False)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, len(good) + 1)
        app.close()
        assert app.state is hotstate.AppState.NOT_RUNNING
    finally:
        app.close()
    expected = dict(true_counts(good))
    assert kafka.read_table(sink, key=utf8, value=int64) == expected


class _CommitsThenTimesOut:
    """A transactional producer whose commit_transaction, once armed, really commits (the coordinator writes
    PrepareCommit and completes it; with ``commits`` False it does not, and the next producer's
    init_transactions aborts) and then reports a retriable timeout, for every retry of that transaction."""

    armed = False
    commits = True
    fired = 0
    live: "weakref.WeakSet" = None  # every wrapper the app made that is still referenced

    def __init__(self, inner):
        self._inner = inner
        self._failing = False
        type(self).live.add(self)

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def begin_transaction(self):
        self._failing = False
        return self._inner.begin_transaction()

    def commit_transaction(self, *args):
        cls = type(self)
        if not self._failing and cls.armed:
            cls.armed = False
            cls.fired += 1
            if cls.commits:
                self._inner.commit_transaction(*args)
            self._failing = True
        if self._failing:
            from confluent_kafka import KafkaError, KafkaException
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "commit answer lost (injected)", retriable=True))
        return self._inner.commit_transaction(*args)


def three_waves(kafka, app_id, source, arm) -> None:
    """Ten records of key "a" per wave, each wave committed before the next; ``arm()`` before the second."""
    for wave in range(3):
        if wave == 1:
            arm()
        kafka.produce(source, [("a", "x")] * 10)
        wait_for(lambda: kafka.committed(app_id, source, 1) == {0: 10 * (wave + 1)}, f"wave {wave} committed", 60, 0.2)


@pytest.mark.parametrize("committed", [True, False], ids=["committed", "aborted"])
def test_a_commit_whose_outcome_is_unknown_restores_and_counts_on_exactly(kafka, tmp_state_dir, monkeypatch,
                                                                           committed):
    """commit_transaction failed with retriable errors (the transaction committed, or not): the task restores
    its store from the changelog and rewinds to the committed offset, so a key's output is 1, 2, ... 30 (before
    the fix, after a commit that went through: 1..20, then 11..20 again, and the store ended at 20)."""
    from hotstate.kafka import clients
    real = clients.producer
    monkeypatch.setattr(clients, "producer", lambda *a, **kw: _CommitsThenTimesOut(real(*a, **kw)))
    monkeypatch.setattr(_CommitsThenTimesOut, "armed", False)
    monkeypatch.setattr(_CommitsThenTimesOut, "commits", committed)
    monkeypatch.setattr(_CommitsThenTimesOut, "fired", 0)
    monkeypatch.setattr(_CommitsThenTimesOut, "live", weakref.WeakSet())
    source = kafka.create_topic(partitions=1, prefix="eos-unknown")
    sink = kafka.create_topic(partitions=1, prefix="eos-unknown-out")
    app_id = kafka.app_id("eos-unknown")
    app = eos_word_count(kafka, app_id, tmp_state_dir, source, sink)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        # the commit of the second wave fails after committing
        three_waves(kafka, app_id, source, arm=lambda: setattr(_CommitsThenTimesOut, "armed", True))
        assert _CommitsThenTimesOut.fired == 1
        wait_for(lambda: app.store("word-counts").get("a") == 30, "the store at 30", 60, 0.2)
        # The replaced producer is gone: only the committer held it (before, the stream thread kept the first
        # producer alive beside its replacement for as long as it ran).
        gc.collect()
        assert len(_CommitsThenTimesOut.live) == 1, list(_CommitsThenTimesOut.live)
    finally:
        assert app.close()
    outputs = [int64(m.value()) for m in kafka.read_all(sink) if utf8(m.key()) == "a"]
    assert outputs == list(range(1, 31)), outputs


class _HangsOnce:
    """A transactional producer whose call ``method`` hangs once armed, as a request librdkafka lost does
    (issues 5456, 5511): with ``answer_lost`` the real call runs first (its request reached the coordinator)
    and only its answer never comes; otherwise the call blocks before its request and, once the test sets
    ``release`` (after the app has given the producer up), sends it late and records what came back in
    ``late``."""

    method = ""
    armed = False
    answer_lost = False
    release: "threading.Event" = None
    late: list = None

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def send_offsets_to_transaction(self, *args):
        return self._call("send_offsets_to_transaction", args)

    def commit_transaction(self, *args):
        return self._call("commit_transaction", args)

    def _call(self, name, args):
        cls = type(self)
        real = getattr(self._inner, name)
        if not (cls.armed and name == cls.method):
            return real(*args)
        cls.armed = False
        if cls.answer_lost:
            real(*args)
        cls.release.wait()
        if not cls.answer_lost:
            from confluent_kafka import KafkaException
            try:
                real(*args)
                cls.late.append("accepted")
            except KafkaException as exc:
                cls.late.append(exc.args[0])
        return None


@pytest.mark.parametrize("method,answer_lost", [("send_offsets_to_transaction", False),
                                                ("commit_transaction", False),
                                                ("commit_transaction", True)],
                         ids=["send_offsets-sent-late", "commit-sent-late", "commit-answer-lost"])
def test_a_transactional_call_that_never_returns_is_given_up_and_the_counts_stay_exact(
        kafka, tmp_state_dir, monkeypatch, method, answer_lost):
    """A transactional call librdkafka never returns from (injected; after a broker restart the real client does
    it, docs/faults.md): the app gives that producer up after the call's bound, a new producer with the same
    transactional id settles the transaction (aborted, or committed when the commit's request had gone through),
    the task restores from its changelog, and the app goes on by itself: a key's output is 1, 2, ... 30 whatever
    the outcome. A request the stuck client sends late is refused (the new producer bumped the epoch). Before,
    the app stopped with TransactionalProducerStuck."""
    import threading

    from confluent_kafka import KafkaError

    from hotstate.kafka import clients
    from hotstate.runtime import commit, stream_thread
    monkeypatch.setattr(stream_thread, "_EOS_TIMEOUT_S", 6.0)  # the calls' timeout: the bound is 6 + 1 s
    monkeypatch.setattr(commit, "HANG_GRACE_S", 1.0)
    real = clients.producer
    monkeypatch.setattr(clients, "producer", lambda *a, **kw: _HangsOnce(real(*a, **kw)))
    for name, value in [("method", method), ("armed", False), ("answer_lost", answer_lost),
                        ("release", threading.Event()), ("late", [])]:
        monkeypatch.setattr(_HangsOnce, name, value)
    source = kafka.create_topic(partitions=1, prefix="eos-stuck")
    sink = kafka.create_topic(partitions=1, prefix="eos-stuck-out")
    app_id = kafka.app_id("eos-stuck")
    app = eos_word_count(kafka, app_id, tmp_state_dir, source, sink)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        three_waves(kafka, app_id, source, arm=lambda: setattr(_HangsOnce, "armed", True))
        assert not _HangsOnce.armed  # the hang happened
        assert app.metrics()["transactional_producers_abandoned_total"] == 1
        wait_for(lambda: app.store("word-counts").get("a") == 30, "the store at 30", 60, 0.2)
        if not answer_lost:
            _HangsOnce.release.set()
            wait_for(lambda: _HangsOnce.late, "the stuck call's late request answered", 30, 0.2)
            late = _HangsOnce.late[0]
            # Fenced: the new producer bumped the epoch. (No == on a KafkaError with a str: confluent-kafka leaves
            # a TypeError set.)
            assert not isinstance(late, str), late
            assert late.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED) and late.fatal(), late
        assert app.state is hotstate.AppState.RUNNING
    finally:
        _HangsOnce.release.set()
        assert app.close()
    outputs = [int64(m.value()) for m in kafka.read_all(sink) if utf8(m.key()) == "a"]
    assert outputs == list(range(1, 31)), outputs
