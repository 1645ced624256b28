"""Session windows through the DSL and the real nodes (no Kafka), against the plain reference of
tests/window_reference.py: merges and their tombstones, grace, late drops, expiry, the output records and
the session store's queries, with random timestamps out of order within and beyond grace."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hotstate
from hotstate import serde, windows
from unit_support import Harness
from window_reference import SessionReference

OUT = "sessions-out"
KEY_SERDE = serde.session_windowed(serde.STRING)


def build(make_app, w, kind="memory", op="count"):
    app = make_app()
    grouped = app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key().windowed_by(w)
    store = hotstate.StoreSpec("sessions", kind=kind)
    if op == "count":
        table = grouped.count(store=store)
        table.to_stream().to(OUT, value_serde=serde.INT64)
    elif op == "aggregate":  # the sorted values of the session: merging two sessions sorts their union
        table = grouped.aggregate(lambda: [], lambda k, v, agg: sorted(agg + [v]), lambda k, a, b: sorted(a + b),
                                  store=store)
        table.to_stream().to(OUT)
    else:
        table = grouped.reduce(lambda agg, v: agg + v, store=store)
        table.to_stream().to(OUT)
    return Harness(app, "clicks"), table


def decoded(h, value_serde=serde.INT64):
    return [(KEY_SERDE.deserialize(s.key), serde.loads(value_serde, s.value), s.timestamp) for s in h.sent]


def expected(ref):
    return [(hotstate.Windowed(k, s, e), v, t) for k, s, e, v, t in ref.emitted]


def assert_queries_equal(store, live):
    for key in "ab":
        assert store.fetch(key, 0, 10_000) == sorted((s, e, v) for (k, s, e), v in live.items() if k == key)
        for lo, hi in ((0, 500), (500, 900), (1_000, 1_000)):  # overlapping [lo, hi]
            assert store.fetch(key, lo, hi) == sorted((s, e, v) for (k, s, e), v in live.items()
                                                      if k == key and e >= lo and s <= hi)
    assert store.fetch_all(0, 10_000) == sorted(((k, s, e, v) for (k, s, e), v in live.items()),
                                                key=lambda x: (x[1], x[2], x[0]))
    overlapping = ((k, s, e, v) for (k, s, e), v in live.items() if e >= 300 and s <= 700)
    assert store.fetch_all(300, 700) == sorted(overlapping, key=lambda x: (x[1], x[2], x[0]))


tens = st.integers(0, 200).map(lambda n: n * 10)
records = st.lists(st.tuples(st.sampled_from(["a", "b"]), tens, st.booleans()), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gap=st.integers(1, 20).map(lambda n: n * 10), grace=st.integers(0, 30).map(lambda n: n * 10),
       extra=st.sampled_from([0, 10, 500]), recs=records)
def test_session_count_equals_the_reference(make_app, gap, grace, extra, recs):
    w = windows.session(gap, grace, retention_ms=gap + grace + extra)
    h, table = build(make_app, w)
    ref = SessionReference(gap, grace, w.retention_ms)
    for key, ts, commit_after in recs:
        h.pipe(key, 1, timestamp=ts)
        ref.process(key, ts)
        if commit_after:
            h.commit()
    assert_queries_equal(h.store("sessions"), ref.live())  # uncommitted writes: expired ones hidden
    h.commit()

    assert decoded(h) == expected(ref)
    assert h.metrics.dropped_late_records.get(h.task.id, 0) == ref.dropped
    live = ref.live()
    assert_queries_equal(h.store("sessions"), live)
    backend = h.task.stores["sessions"].backend
    assert backend.approximate_num_entries() == len(live)  # expired sessions purged, merged ones deleted
    assert backend.stream_time() == ref.stream_time


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gap=st.integers(1, 10).map(lambda n: n * 10), grace=st.integers(0, 20).map(lambda n: n * 10),
       recs=st.lists(st.tuples(tens, st.integers(-5, 5)), min_size=1, max_size=40))
def test_session_aggregate_with_a_merger_equals_the_reference(make_app, gap, grace, recs):
    w = windows.session(gap, grace)
    h, _ = build(make_app, w, op="aggregate")
    ref = SessionReference(gap, grace, w.retention_ms, value_of=lambda rs: sorted(v for _, v in rs))
    for ts, v in recs:
        h.pipe("k", v, timestamp=ts)
        ref.process("k", ts, v)
    assert decoded(h, serde.JSON) == expected(ref)
    assert h.metrics.dropped_late_records.get(h.task.id, 0) == ref.dropped


def test_session_reduce_merges_with_the_reducer(make_app):
    h, _ = build(make_app, windows.session(100, 200, retention_ms=1_000), op="reduce")
    h.pipe("k", 1, timestamp=0)
    h.pipe("k", 2, timestamp=300)
    h.pipe("k", 4, timestamp=150)  # within 100 of neither: a third session
    h.pipe("k", 8, timestamp=220)  # joins [150, 150] and [300, 300]
    W = hotstate.Windowed
    assert decoded(h) == [(W("k", 0, 0), 1, 0), (W("k", 300, 300), 2, 300), (W("k", 150, 150), 4, 150),
                          (W("k", 150, 150), None, 150), (W("k", 300, 300), None, 300), (W("k", 150, 300), 14, 300)]
    assert h.store("sessions").fetch("k", 0, 1_000) == [(0, 0, 1), (150, 300, 14)]
    assert h.store("sessions").fetch("k", 100, 149) == []
    assert h.store("sessions").fetch("k", 300, 300) == [(150, 300, 14)]


def test_a_record_is_dropped_when_its_session_ends_before_stream_time_minus_gap_and_grace(make_app):
    h, _ = build(make_app, windows.session(inactivity_gap_ms=100, grace_ms=50, retention_ms=10_000))
    h.pipe("u", 1, timestamp=1_000)
    h.pipe("u", 1, timestamp=1_150)  # stream time 1150; close = 1000: a session ending at 1000 may still change
    h.pipe("u", 1, timestamp=1_000)  # joins [1000, 1000] (end 1000, not < 1000): accepted
    h.pipe("u", 1, timestamp=1_151)  # close = 1001
    h.pipe("u", 1, timestamp=1_000)  # [1000, 1000] would end at 1000 < 1001: dropped
    h.pipe("u", 1, timestamp=1_100)  # joins both: [1000, 1151], end 1151: accepted
    assert h.metrics.dropped_late_records == {h.task.id: 1}
    assert h.store("sessions").fetch("u", 0, 2_000) == [(1_000, 1_151, 5)]


def test_to_writes_kafka_streams_session_windowed_keys(make_app):
    h, _ = build(make_app, windows.session(10, 0))
    h.pipe("key", 1, timestamp=7)
    h.pipe("key", 1, timestamp=12)
    raw = h.sent[-1].key
    assert raw == b"key" + struct.pack(">q", 12) + struct.pack(">q", 7)  # key + end + start (SessionKeySchema)
    assert KEY_SERDE.deserialize(raw) == hotstate.Windowed("key", 7, 12)
    assert h.sent[1].value is None and KEY_SERDE.deserialize(h.sent[1].key) == hotstate.Windowed("key", 7, 7)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        KEY_SERDE.deserialize(b"short")
    with pytest.raises(TypeError, match="hotstate.Windowed"):
        KEY_SERDE.serialize("key")


def test_session_windows_refuse_bad_settings(make_app):
    with pytest.raises(hotstate.ConfigError, match="inactivity_gap_ms=0"):
        windows.session(0, 10)
    with pytest.raises(hotstate.ConfigError, match="grace_ms=-1"):
        windows.session(10, -1)
    with pytest.raises(hotstate.ConfigError, match="at least inactivity_gap_ms \\+ grace_ms = 15"):
        windows.session(10, 5, retention_ms=14)
    grouped = make_app().stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key()
    sessions = grouped.windowed_by(windows.session(10, 5))
    with pytest.raises(hotstate.TopologyError, match="merger must be callable"):
        sessions.aggregate(lambda: 0, lambda k, v, a: a, None, store="s")
    with pytest.raises(hotstate.TopologyError, match="cannot hold sessions"):
        sessions.count(store=hotstate.StoreSpec("s", kind="window-memory", retention_ms=10))
    t = sessions.count(store="on-disk")
    assert (t.store.kind, t.store.retention_ms, t.store.sessions, t.store.windowed) == \
        ("session-rocksdb", 15, True, True)


def test_a_session_ending_at_stream_time_minus_retention_is_expired_as_in_kafka_streams(make_app):
    """Kafka Streams' session stores drop a session once end <= stream time - retention (InMemorySessionStore's
    removeExpiredSegments): with gap 10, grace 0 (retention 10), after another key moved stream time to 10 a record
    at 10 no longer finds [0, 0] and starts a session of its own, though it is within the gap."""
    h, _ = build(make_app, windows.session(inactivity_gap_ms=10, grace_ms=0))
    h.pipe("k", 1, timestamp=0)
    h.pipe("x", 1, timestamp=10)  # the store's stream time is 10 now: [0, 0] ends at 10 - retention
    h.pipe("k", 1, timestamp=10)
    assert h.store("sessions").fetch("k", 0, 100) == [(10, 10, 1)]
    assert h.metrics.dropped_late_records == {}


def test_to_takes_the_users_serde_for_session_keys(make_app):
    app = make_app()
    by_text = serde.of(lambda w: f"{w.key}@{w.start_ms}-{w.end_ms}".encode(), lambda b: b.decode(), "text")
    (app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key()
        .windowed_by(windows.session(100, 0)).count(store="n")
        .to_stream().to(OUT, key_serde=by_text, value_serde=serde.INT64))
    h = Harness(app, "clicks")
    h.pipe("k", 1, timestamp=120)
    h.pipe("k", 1, timestamp=150)
    assert [(s.key, s.value) for s in h.sent] == [(b"k@120-120", struct.pack(">q", 1)), (b"k@120-120", None),
                                                  (b"k@120-150", struct.pack(">q", 2))]
