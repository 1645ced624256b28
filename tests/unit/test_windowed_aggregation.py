"""Windowed count / aggregate / reduce through the DSL and the real nodes (no Kafka), against a
straightforward reference: stream time, grace, late drops, the output records and the store's live windows,
with random timestamps out of order within and beyond grace, and commits at random points."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hotstate
from hotstate import serde, windows
from unit_support import Harness
from window_reference import Reference

OUT = "per-window-out"


def build(make_app, w, kind="memory", op="count"):
    app = make_app()
    grouped = app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key().windowed_by(w)
    store = hotstate.StoreSpec("per-window", kind=kind)
    if op == "count":
        table = grouped.count(store=store)
        table.to_stream().to(OUT, value_serde=serde.INT64)
    elif op == "aggregate":
        table = grouped.aggregate(lambda: [], lambda k, v, agg: agg + [v], store=store)
        table.to_stream().to(OUT)
    else:
        table = grouped.reduce(lambda agg, v: agg + v, store=store)
        table.to_stream().to(OUT)
    return Harness(app, "clicks"), table


# Times in steps of 10 ms so that window ends, grace and stream time meet exactly (the boundaries) often.
tens = st.integers(0, 300).map(lambda n: n * 10)
records = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), tens, st.booleans()), min_size=1, max_size=80)


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # make_app builds a fresh App per call
@given(size=st.integers(1, 40).map(lambda n: n * 10), ratio=st.sampled_from([1, 2, 3, 4, 7]),
       grace=st.integers(0, 50).map(lambda n: n * 10), extra=st.sampled_from([0, 1, 10, 300]), recs=records)
def test_windowed_count_equals_the_reference(make_app, size, ratio, grace, extra, recs):
    advance = max(1, size // ratio)
    w = windows.hopping(size, advance, grace, retention_ms=size + grace + extra)
    h, table = build(make_app, w)
    ref = Reference(size, advance, grace, w.retention_ms)
    for key, ts, commit_after in recs:
        h.pipe(key, 1, timestamp=ts)
        ref.process(key, ts, lambda old: 1 if old is None else old + 1)
        if commit_after:
            h.commit()
    h.commit()

    key_serde = serde.time_windowed(serde.STRING, size)
    got = [(key_serde.deserialize(s.key), struct.unpack(">q", s.value)[0], s.timestamp) for s in h.sent]
    assert got == [(hotstate.Windowed(k, s, e), v, t) for k, s, e, v, t in ref.emitted]
    assert all(s.topic == OUT for s in h.sent)
    assert h.metrics.dropped_late_records.get(h.task.id, 0) == ref.dropped
    assert h.task.stream_time == ref.stream_time

    store = h.store("per-window")
    live = ref.live()
    for key in "abc":
        assert store.fetch(key, 0, 10_000) == sorted((s, v) for (k, s), v in live.items() if k == key)
    assert store.fetch_all(0, 10_000) == sorted(((k, s, v) for (k, s), v in live.items()), key=lambda e: (e[1], e[0]))
    # Expired windows are gone from the backend too (purged), not only hidden from queries.
    backend = h.task.stores["per-window"].backend
    assert backend.approximate_num_entries() == len(live)
    assert backend.stream_time() == ref.stream_time


@pytest.mark.parametrize("op", ["aggregate", "reduce"])
def test_windowed_aggregate_and_reduce_equal_the_reference(make_app, op):
    w = windows.tumbling(100, 50)
    h, _ = build(make_app, w, op=op)
    ref = Reference(100, 100, 50, w.retention_ms)
    stamps = [5, 120, 90, 260, 130, 149, 40, 300, 151, 199, 99]  # out of order; some within grace, some beyond
    for i, ts in enumerate(stamps):
        h.pipe("k", i, timestamp=ts)
        if op == "aggregate":
            ref.process("k", ts, lambda old, i=i: (old or []) + [i])
        else:
            ref.process("k", ts, lambda old, i=i: i if old is None else old + i)
    assert [(struct.unpack(">q", s.key[-8:])[0], s.value) for s in h.sent] == \
        [(start, serde.JSON.serialize(v) if op == "aggregate" else struct.pack(">q", v))
         for _, start, _, v, _ in ref.emitted]
    assert h.metrics.dropped_late_records[h.task.id] == ref.dropped > 0


def test_a_record_is_dropped_once_its_window_end_plus_grace_reaches_stream_time(make_app):
    h, _ = build(make_app, windows.tumbling(size_ms=60_000, grace_ms=5_000))
    h.pipe("u", 1, timestamp=10_000)     # window [0, 60000)
    h.pipe("u", 1, timestamp=64_999)     # stream time 64999: [0, 60000) still open (60000 + 5000 > 64999)
    h.pipe("u", 1, timestamp=59_999)     # accepted, within grace
    h.pipe("u", 1, timestamp=65_000)     # stream time 65000 = end + grace: closed from now on
    h.pipe("u", 1, timestamp=59_999)     # dropped
    store = h.store("per-window")
    assert store.fetch("u", 0, 120_000) == [(60_000, 2)]  # [0, 60000) expired with the default retention
    assert h.metrics.dropped_late_records == {h.task.id: 1}
    assert h.metrics.snapshot()["dropped_late_records_total"] == {h.task.id: 1}
    assert [struct.unpack(">q", s.value)[0] for s in h.sent] == [1, 1, 2, 2]


def test_timestamp_extractor_gives_event_time_and_bad_answers_fail_the_record(make_app):
    app = make_app()
    seen = []

    def extract(record, partition_time):
        seen.append(partition_time)
        return record.value

    (app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64, timestamp_extractor=extract)
        .group_by_key().windowed_by(windows.tumbling(10, 0)).count(store="n")
        .to_stream().to(OUT, value_serde=serde.INT64))
    h = Harness(app, "clicks")
    h.pipe("k", 25, timestamp=999_999)
    h.pipe("k", 21, timestamp=0)
    assert seen == [-1, 25]
    assert [s.timestamp for s in h.sent] == [25, 25]  # the window's event time: max of its records'
    assert h.store("n").fetch("k", 0, 100) == [(20, 2)]
    with pytest.raises(ValueError, match="timestamp_extractor returned -3"):
        h.pipe("k", -3)
    with pytest.raises(hotstate.TopologyError, match="timestamp_extractor"):
        make_app().stream("x", timestamp_extractor=42)


def test_null_keys_are_dropped_and_negative_timestamps_fail(make_app):
    h, _ = build(make_app, windows.tumbling(10, 0))
    h.pipe(None, 1, timestamp=5)
    assert h.metrics.dropped_null_key == 1 and not h.sent
    with pytest.raises(ValueError, match="no valid timestamp"):
        h.pipe("k", 1, timestamp=-1)


def test_a_windowed_store_spec_keeps_the_users_kind_and_refuses_others(make_app):
    app = make_app()
    grouped = app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key()
    t = grouped.windowed_by(windows.tumbling(1_000, 100, retention_ms=5_000)).count(store="on-disk")
    assert (t.store.kind, t.store.retention_ms, t.store.windowed) == ("window-rocksdb", 5_000, True)
    with pytest.raises(hotstate.TopologyError, match="hotstate.windows"):
        grouped.windowed_by(60_000)
    with pytest.raises(hotstate.ConfigError, match="retention_ms is for windowed stores"):
        hotstate.StoreSpec("kv", retention_ms=5)
    with pytest.raises(hotstate.ConfigError, match="needs retention_ms"):
        hotstate.StoreSpec("w", kind="window-memory")


def test_to_takes_the_users_serde_for_windowed_keys(make_app):
    app = make_app()
    by_text = serde.of(lambda w: f"{w.key}@{w.start_ms}-{w.end_ms}".encode(), lambda b: b.decode(), "text")
    (app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key()
        .windowed_by(windows.hopping(100, 50, 0)).count(store="n")
        .to_stream().to(OUT, key_serde=by_text, value_serde=serde.INT64))
    h = Harness(app, "clicks")
    h.pipe("k", 1, timestamp=120)
    assert [s.key for s in h.sent] == [b"k@50-150", b"k@100-200"]


def test_dropping_uncommitted_work_rewinds_stream_time_so_the_redo_meets_the_same_lateness(make_app):
    """An aborted transaction drops the overlay and rewinds the input: the records are processed again, and a
    record that was on time the first time must be on time again."""
    h, _ = build(make_app, windows.tumbling(100, 0))
    h.pipe("k", 1, timestamp=50)
    h.commit()
    assert h.task.committed_stream_time == 50
    h.pipe("k", 1, timestamp=90)
    h.pipe("k", 1, timestamp=400)  # stream time 400: window [0, 100) is closed now
    h.task.drop_uncommitted()  # what TaskManager.rewind does after an abort
    assert h.task.stream_time == 50 and h.store("per-window").stream_time() == 50
    h.pipe("k", 1, timestamp=90)  # processed again: on time, as the first time
    assert h.store("per-window").fetch("k", 0, 1_000) == [(0, 2)]
    assert h.metrics.dropped_late_records == {}


def test_records_that_never_reach_the_aggregation_do_not_close_its_windows(make_app):
    """Each windowed aggregation closes windows by the largest event time among the records that reached it (its
    store's stream time), as Kafka Streams' KStreamWindowAggregate does with its own observed stream time: a
    record without a key, or filtered out before the aggregation, moves the task's stream time but not the
    aggregation's. Found side by side with Kafka Streams (tests/integration/test_windowed_vs_kstreams.py)."""
    app = make_app()
    clicks = app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64)
    clicks.group_by_key().windowed_by(windows.tumbling(100, 20)).count(store="all")
    clicks.filter(lambda k, v: v > 0).group_by_key().windowed_by(windows.tumbling(100, 20)).count(store="positive")
    h = Harness(app, "clicks")
    h.pipe("k", 1, timestamp=50)
    h.pipe(None, 1, timestamp=500)  # no key: dropped by both aggregations
    h.pipe("k", 0, timestamp=300)  # reaches "all" only
    assert h.task.stream_time == 500
    h.pipe("k", 1, timestamp=60)  # "all": window [0, 100) closed at 300; "positive": its time is 60, open
    assert h.store("all").fetch("k", 0, 1_000) == [(300, 1)]
    assert h.store("positive").fetch("k", 0, 1_000) == [(0, 2)]
    assert h.metrics.dropped_late_records == {h.task.id: 1} and h.metrics.dropped_null_key == 2
    h.pipe("k", 1, timestamp=121)  # "positive": its time 121 = 100 + 20, [0, 100) closes ("all": late)
    h.pipe("k", 1, timestamp=70)  # late for both
    assert h.store("positive").fetch("k", 0, 1_000) == [(100, 1)]  # [0, 100) expired too (retention 120)
    assert h.metrics.dropped_late_records == {h.task.id: 4}  # 60, 121 and 70 for "all", 70 for "positive"


@pytest.mark.parametrize("kind", ["session", "sliding"])
def test_session_and_sliding_aggregations_close_windows_by_their_own_stream_time(make_app, kind):
    """As the time windows above: a record without a key far ahead in time moves the task's stream time, but a
    session or sliding aggregation it never reached does not drop the next on-time record as late (with the
    task's stream time it did: end + gap + grace or t + d below 1000 - grace)."""
    app = make_app()
    w = (windows.session(inactivity_gap_ms=100, grace_ms=20) if kind == "session"
         else windows.sliding(time_difference_ms=100, grace_ms=20))
    app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key().windowed_by(w).count(
        store="counts")
    h = Harness(app, "clicks")
    h.pipe("k", 1, timestamp=50)
    h.pipe(None, 1, timestamp=1_000)  # no key: dropped, but the task's stream time is 1000 now
    h.pipe("k", 1, timestamp=60)
    assert h.task.stream_time == 1_000
    assert h.metrics.dropped_late_records.get(h.task.id, 0) == 0
    got = h.store("counts").fetch("k", 0, 2_000)
    if kind == "session":
        assert got == [(50, 60, 2)]
    else:
        assert max(v for _, v in got) == 2  # a window holds both records
