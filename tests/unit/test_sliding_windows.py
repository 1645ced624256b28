"""Sliding windows through the DSL and the real nodes (no Kafka), against the definition written the plain way
(tests/window_reference.py): which windows exist, what each holds, late drops and expiry, with records ahead of
stream time, out of order within grace and beyond it; the output updates end at each window's final value."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hotstate
from hotstate import serde, windows
from unit_support import Harness
from window_reference import SlidingReference

OUT = "sliding-out"


def build(make_app, w, op="count"):
    app = make_app()
    grouped = app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key().windowed_by(w)
    store = hotstate.StoreSpec("sliding", kind="memory")
    if op == "count":
        grouped.count(store=store).to_stream().to(OUT, value_serde=serde.INT64)
    else:  # the sorted values of the window: independent of the order records arrive in
        grouped.aggregate(lambda: [], lambda k, v, agg: sorted(agg + [v]), store=store).to_stream().to(OUT)
    return Harness(app, "clicks")


# Each step: a key, where its timestamp goes relative to stream time so far, and by how much.
steps = st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["ahead", "ahead", "within", "beyond"]),
                           st.integers(0, 30), st.booleans()), min_size=1, max_size=60)


def timestamps(steps, d, grace):
    """The steps' timestamps: ahead of stream time, behind it within grace (every window of the record still
    open), or so far behind that the record's own window is closed."""
    out, stream_time = [], 0
    for key, where, n, commit in steps:
        if where == "ahead":
            ts = stream_time + n * 10
        elif where == "within":
            ts = max(0, stream_time - min(n * 10, grace))
        else:
            ts = stream_time - grace - d - 10 - n * 10
            if ts < 0:
                ts = stream_time + n * 10
        stream_time = max(stream_time, ts)
        out.append((key, ts, n, commit))
    return out


def last_updates(h, d, value_serde=serde.INT64) -> dict:
    key_serde = serde.time_windowed(serde.STRING, d)
    out = {}
    for s in h.sent:
        w = key_serde.deserialize(s.key)
        out[(w.key, w.start_ms)] = serde.loads(value_serde, s.value)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(d=st.integers(1, 20).map(lambda n: n * 10), grace=st.integers(0, 30).map(lambda n: n * 10),
       extra=st.sampled_from([0, 10, 1_000]), op=st.sampled_from(["count", "aggregate"]), recs=steps)
def test_sliding_windows_equal_their_definition(make_app, d, grace, extra, op, recs):
    w = windows.sliding(d, grace, retention_ms=2 * d + grace + 1 + extra)
    h = build(make_app, w, op)
    value_of = len if op == "count" else (lambda rs: sorted(v for _, v in rs))
    ref = SlidingReference(d, grace, w.retention_ms, value_of)
    for key, ts, n, commit in timestamps(recs, d, grace):
        h.pipe(key, n, timestamp=ts)
        ref.process(key, ts, n)
        if commit:
            h.commit()
    h.commit()
    assert ref.partial == 0
    live = ref.live()
    store = h.store("sliding")
    for key in "ab":
        assert store.fetch(key, 0, 100_000) == sorted((s, v) for (k, s), v in live.items() if k == key)
    assert h.metrics.dropped_late_records.get(h.task.id, 0) == ref.dropped
    # Every window that ever existed had its final value forwarded last; no window the definition lacks.
    updates = last_updates(h, d, serde.INT64 if op == "count" else serde.JSON)
    assert updates == ref.windows()
    assert all(s.timestamp <= ref.stream_time for s in h.sent)


def test_sliding_count_by_hand(make_app):
    """d = 10: records at 20, 25, 40 (in order), then 28 (out of order, within grace)."""
    h = build(make_app, windows.sliding(time_difference_ms=10, grace_ms=20))
    for ts in (20, 25, 40, 28):
        h.pipe("k", 1, timestamp=ts)
    assert h.store("sliding").fetch("k", 0, 100) == [
        (10, 1),  # [10, 20]: 20 (left window of 20)
        (15, 2),  # [15, 25]: 20, 25 (left of 25)
        (18, 3),  # [18, 28]: 20, 25, 28 (left of 28, its aggregate taken from [15, 25])
        (21, 2),  # [21, 31]: 25, 28 (right window of 20)
        (26, 1),  # [26, 36]: 28 (right of 25, created by 28); 28 has no right window: 40 > 28 + 1 + 10
        (30, 1),  # [30, 40]: 40 (left of 40)
    ]
    key_serde = serde.time_windowed(serde.STRING, 10)
    assert key_serde.deserialize(h.sent[0].key) == hotstate.Windowed("k", 10, 20)


def test_a_record_is_dropped_from_each_closed_window_and_added_to_the_open_ones(make_app):
    h = build(make_app, windows.sliding(time_difference_ms=10, grace_ms=0, retention_ms=1_000))
    h.pipe("k", 1, timestamp=100)
    h.pipe("k", 1, timestamp=115)  # stream time 115: windows ending before 115 are closed
    h.pipe("k", 1, timestamp=104)  # its left window [94, 104] is closed: the record is dropped
    assert h.metrics.dropped_late_records == {h.task.id: 1}
    assert dict(h.store("sliding").fetch("k", 0, 1_000)) == {90: 1, 105: 1}
    h.pipe("k", 1, timestamp=110)  # closed: its left window [100, 110] and 100's right window [101, 111]
    assert h.metrics.dropped_late_records == {h.task.id: 3}
    # Open: [105, 115] now holds 110 too; 110's right window [111, 121] is created with 115 in it.
    assert dict(h.store("sliding").fetch("k", 0, 1_000)) == {90: 1, 105: 2, 111: 1}


def test_sliding_windows_refuse_bad_settings(make_app):
    with pytest.raises(hotstate.ConfigError, match="time_difference_ms=0"):
        windows.sliding(0, 10)
    with pytest.raises(hotstate.ConfigError, match="2 \\* time_difference_ms \\+ grace_ms \\+ 1 = 26"):
        windows.sliding(10, 5, retention_ms=25)
    assert windows.sliding(10, 5).retention_ms == 26


def test_a_record_at_the_grace_boundary_takes_its_aggregate_from_a_window_2d_old(make_app):
    """d = 40, grace = 170: records at 40 and 250 (stream time 250), then 80 = 250 - grace, on time. Its left
    window [40, 80] takes 40's aggregate from [0, 40], which starts at 80 - 2d: with Kafka Streams' least retention
    (2d + grace = 250) that window is expired (0 <= 250 - 250) and 40 would be missing from [40, 80]."""
    h = build(make_app, windows.sliding(time_difference_ms=40, grace_ms=170))
    for ts in (40, 250, 80):
        h.pipe("k", 1, timestamp=ts)
    assert h.store("sliding").fetch("k", 0, 1_000) == [(0, 1), (40, 2), (41, 1), (210, 1)]


def test_a_record_updates_its_windows_newest_first_as_kafka_streams_does(make_app):
    """Kafka Streams 4.4's KStreamSlidingWindowAggregate walks a key's windows backwards (processReverse, its
    stores all fetch backwards): the existing windows holding the record are updated newest start first, then
    the previous record's right window, the record's left window and its right window are created. Found side by
    side (tests/integration/test_windowed_vs_kstreams.py): hotstate updated them oldest first."""
    h = build(make_app, windows.sliding(100, 1_000))
    for ts in (1_000, 1_050):
        h.pipe("a", 1, timestamp=ts)
    del h.sent[:]
    h.pipe("a", 1, timestamp=1_020)  # in [950, 1050] and [1001, 1101]; creates [920, 1020] and [1021, 1121]
    key_serde = serde.time_windowed(serde.STRING, 100)
    got = [(key_serde.deserialize(s.key).start_ms, struct.unpack(">q", s.value)[0], s.timestamp) for s in h.sent]
    assert got == [(1_001, 2, 1_050), (950, 3, 1_050), (920, 2, 1_020), (1_021, 1, 1_050)]
