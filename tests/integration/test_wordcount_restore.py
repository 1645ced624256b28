"""Word count on a real broker: correct counts over several partitions, and what each kind of restart
restores (checked with the restore listener against the changelog's watermarks)."""
from __future__ import annotations

import random
import shutil
from collections import Counter

import pytest

import hotstate
from kafka_helpers import (RecordingListener, build_word_count, int64, partition_for, store_offsets, true_counts,
                           utf8, wait_processed, wait_store_offsets_at_end, word_records, words)

pytestmark = pytest.mark.integration

PARTITIONS = 4
STORE = "word-counts"


class WordCount:
    """One word-count deployment (input, output, app_id, state dir) that a test starts several times."""

    def __init__(self, kafka, state_dir, seed: int, vocabulary: int = 300, store=STORE):
        self.kafka = kafka
        self.state_dir = state_dir
        self.rng = random.Random(seed)
        self.vocab = words(vocabulary)
        self.store_spec = store
        self.store = store if isinstance(store, str) else store.name
        self.source = kafka.create_topic(partitions=PARTITIONS, prefix="it-words")
        self.sink = kafka.create_topic(partitions=PARTITIONS, prefix="it-counts")
        self.app_id = kafka.app_id("it-wc")
        self.changelog = kafka.changelog(self.app_id, self.store)
        self.expected: Counter = Counter()
        self.produced = 0

    def produce(self, n: int) -> None:
        recs = word_records(self.rng, self.vocab, n)
        self.kafka.produce(self.source, recs, partitions=PARTITIONS)
        self.expected.update(true_counts(recs))
        self.produced += n

    def app(self, listener=None, **config):
        return build_word_count(self.kafka.bootstrap, self.app_id, self.state_dir, self.source, self.sink,
                                store=self.store_spec, listener=listener, **config)

    def run(self, listener=None, produce_while_running: int = 0, **config):
        """Start, wait RUNNING, optionally produce more, wait until every record so far is processed and
        committed (store offsets == changelog end), check the store, close.
        Returns (app, listener, changelog ends, {task: {store: restored_records}} at RUNNING)."""
        listener = listener or RecordingListener()
        app = self.app(listener, **config)
        app.start()
        try:
            app.wait_until_running(timeout_s=60)
            restored_by_tasks = {t.id: {n: s.restored_records for n, s in t.stores.items()} for t in app.tasks()}
            if produce_while_running:
                self.produce(produce_while_running)
            # Records processed in this run: everything not yet committed by the group (here: the new ones).
            wait_processed(app, self.produced - self._committed_before_run)
            self.check_store(app)
            ends = wait_store_offsets_at_end(self.kafka, app, self.store, self.changelog)
        finally:
            assert app.close(timeout_s=30)
        self.all_committed()
        assert app.state is hotstate.AppState.NOT_RUNNING
        return app, listener, ends, restored_by_tasks

    _committed_before_run = 0

    def all_committed(self) -> None:
        """After a clean close: the next run processes only what is produced from now on."""
        self._committed_before_run = self.produced

    def check_store(self, app) -> None:
        store = app.store(self.store)
        wrong = {w: (store.get(w), c) for w, c in self.expected.items() if store.get(w) != c}
        assert not wrong, f"{len(wrong)} wrong counts in the store (got, want), e.g. {dict(list(wrong.items())[:5])}"
        assert store.get("never-produced") is None

    def check_output(self) -> None:
        out = self.kafka.read_table(self.sink)
        assert out == dict(self.expected)

    def marks(self) -> dict[int, tuple[int, int]]:
        return self.kafka.watermarks(self.changelog)


def check_listener_agrees(listener, marks: dict[int, tuple[int, int]], expect_start: dict[int, int]) -> None:
    """For every partition in ``expect_start``: one restore [start, changelog end), batches that add up
    to total_restored == end - start, batch end offsets increasing and the last one == end - 1; all on the
    state updater thread. Partitions not in ``expect_start`` restore nothing."""
    starts = listener.starts()
    totals = listener.totals()
    assert set(starts) == set(expect_start), f"restored partitions {sorted(starts)}, expected {sorted(expect_start)}"
    assert set(totals) == set(expect_start), f"restores that ended: {sorted(totals)}, started: {sorted(starts)}"
    for p, want_start in expect_start.items():
        low, high = marks[p]
        start, end = starts[p]
        assert (start, end) == (want_start, high), f"partition {p}: restore range {(start, end)}, want {(want_start, high)}"
        batches = listener.of("batch", p)
        assert batches, f"partition {p}: no on_batch_restored"
        assert sum(b.b for b in batches) == totals[p] == end - start, (
            f"partition {p}: batches {[b.b for b in batches]} sum to {sum(b.b for b in batches)}, "
            f"total_restored {totals[p]}, end - start {end - start}")
        ends = [b.a for b in batches]
        assert ends == sorted(set(ends)), f"partition {p}: batch end offsets not increasing: {ends}"
        assert start <= ends[0] and ends[-1] == end - 1, f"partition {p}: batch ends {ends} for range [{start}, {end})"
    threads = {e.thread for e in listener.events}
    assert threads <= {"hotstate-state-updater"}, f"listener called on {threads}, not the state updater thread"


def test_counts_across_partitions_in_store_output_and_changelog(kafka, tmp_state_dir):
    wc = WordCount(kafka, tmp_state_dir, seed=1)
    wc.produce(2000)
    app = wc.app()
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        tasks = app.tasks()
        assert [t.id for t in tasks] == [f"0_{p}" for p in range(PARTITIONS)]
        assert all(t.state is hotstate.TaskState.RUNNING for t in tasks)
        assert [t.input_partitions for t in tasks] == [[(wc.source, p)] for p in range(PARTITIONS)]
        wc.produce(2000)  # half before start, half while running
        wait_processed(app, 4000)
        assert app.metrics()["records_processed_total"] == 4000
        wc.check_store(app)
        wait_store_offsets_at_end(kafka, app, STORE, wc.changelog)
    finally:
        assert app.close()
    # Every partition had work: this really is a multi-partition test.
    per_partition = Counter(partition_for(w, PARTITIONS) for w in wc.expected.elements())
    assert sorted(per_partition) == list(range(PARTITIONS))
    wc.check_output()
    # The changelog holds the counts too, each key in its input partition, 8-byte big-endian.
    latest = {}
    for msg in kafka.read_all(wc.changelog):
        key = utf8(msg.key())
        assert msg.partition() == partition_for(key, PARTITIONS), f"{key} in changelog partition {msg.partition()}"
        latest[key] = int64(msg.value())
    assert latest == dict(wc.expected)


def test_clean_restart_restores_nothing(kafka, tmp_state_dir):
    wc = WordCount(kafka, tmp_state_dir, seed=2)
    wc.produce(3000)
    _, first, ends1, _ = wc.run()
    assert first.events == []  # an empty changelog: nothing to restore
    assert sum(ends1.values()) > 0

    # Clean restart: the stores hold everything up to the changelog end, so nothing is restored.
    app = wc.app(listener := RecordingListener())
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        assert listener.total_restored() == 0, f"a clean restart restored: {listener.events}"
        assert listener.of("start") == [], f"a clean restart started restores: {listener.events}"
        assert store_offsets(app, STORE) == kafka.ends(wc.changelog) == ends1
        assert all(s.restored_records == 0 for t in app.tasks() for s in t.stores.values())
        wc.check_store(app)
        wc.produce(1500)  # more input, processed by this run
        wait_processed(app, 1500)
        wc.check_store(app)
        ends2 = wait_store_offsets_at_end(kafka, app, STORE, wc.changelog)
    finally:
        assert app.close()
    wc.all_committed()
    assert sum(ends2.values()) > sum(ends1.values())

    # Close cleanly, delete nothing, restart: nothing to restore, counts of both rounds.
    app, third, ends3, restored = wc.run()
    assert third.events == [], f"a clean restart restored: {third.events}"
    assert restored == {f"0_{p}": {STORE: 0} for p in range(PARTITIONS)}
    assert ends3 == ends2
    wc.check_output()


def test_lagging_store_restores_exactly_the_delta(kafka, tmp_state_dir, tmp_path):
    wc = WordCount(kafka, tmp_state_dir, seed=3)
    wc.produce(2000)
    wc.run()
    old_offsets = kafka.ends(wc.changelog)  # a clean close leaves each store at its changelog end
    aside = tmp_path / "state-copy"
    shutil.copytree(tmp_state_dir, aside)

    _, _, ends2, _ = wc.run(produce_while_running=2000)
    assert all(ends2[p] > old_offsets[p] for p in range(PARTITIONS)), (old_offsets, ends2)

    # Put the old state back: it lags the changelog by what the second run wrote.
    shutil.rmtree(tmp_state_dir)
    shutil.copytree(aside, tmp_state_dir)
    marks = wc.marks()
    _, listener, ends3, restored = wc.run(restore_batch_records_max=100)
    assert ends3 == ends2
    check_listener_agrees(listener, marks, expect_start=old_offsets)
    assert listener.totals() == {p: ends2[p] - old_offsets[p] for p in range(PARTITIONS)}
    assert restored == {f"0_{p}": {STORE: ends2[p] - old_offsets[p]} for p in range(PARTITIONS)}
    wc.check_output()


def test_wiped_state_dir_restores_the_full_changelog(kafka, tmp_state_dir):
    wc = WordCount(kafka, tmp_state_dir, seed=4)
    wc.produce(2000)
    wc.run()
    wc.run(produce_while_running=1000)  # two runs: keys updated in both have two changelog records
    marks = wc.marks()
    assert all(low == 0 and high > 0 for low, high in marks.values()), marks

    shutil.rmtree(tmp_state_dir)
    tmp_state_dir.mkdir()
    app, listener, ends, restored = wc.run(restore_batch_records_max=64, restore_consume_records_max=200)
    check_listener_agrees(listener, marks, expect_start={p: low for p, (low, high) in marks.items()})
    assert listener.totals() == {p: high - low for p, (low, high) in marks.items()}
    assert sum(len(listener.of("batch", p)) for p in marks) > len(marks), "expected several batches per partition"
    assert app.metrics()["restore_records_total"] == sum(high - low for low, high in marks.values())
    assert ends == {p: high for p, (low, high) in marks.items()}
    wc.check_output()


def test_memory_store_restores_in_full_after_a_clean_restart(kafka, tmp_state_dir):
    wc = WordCount(kafka, tmp_state_dir, seed=5, store=hotstate.StoreSpec("mem-counts", kind="memory"))
    wc.produce(2000)
    wc.run()
    marks = wc.marks()
    assert all(high > 0 for low, high in marks.values())
    _, listener, _, _ = wc.run(produce_while_running=500)
    check_listener_agrees(listener, marks, expect_start={p: low for p, (low, high) in marks.items()})
    assert listener.totals() == {p: high - low for p, (low, high) in marks.items()}
    wc.check_output()
    # A memory store leaves nothing on disk.
    assert not list(tmp_state_dir.glob(f"{wc.app_id}/*/mem-counts"))
