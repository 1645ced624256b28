"""Word count on a real broker: correct counts over several partitions, and what each kind of restart
restores (checked with the restore listener against the changelog's watermarks)."""
from __future__ import annotations

import shutil
from collections import Counter

import pytest

import hotstate
from kafka_helpers import (RecordingListener, WordCount, check_listener_agrees, int64, partition_for, store_offsets,
                           utf8, wait_processed, wait_store_offsets_at_end)

pytestmark = pytest.mark.integration

PARTITIONS = 4
STORE = "word-counts"


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
        wait_store_offsets_at_end(kafka, app, STORE, wc.changelog, source=wc.source)
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
        ends2 = wait_store_offsets_at_end(kafka, app, STORE, wc.changelog, source=wc.source)
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
