"""suppress_until_window_closes through the DSL and the real nodes (no Kafka): final results only, once per
window, after window end + grace (sessions: + gap), against the plain reference of tests/window_reference.py
fed by the windowed references; the buffer is a store that commits and rewinds with the task (aborted work
processed again emits the same)."""
from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hotstate
from hotstate import serde, windows
from unit_support import Harness
from window_reference import Reference, SessionReference, SuppressReference

FINAL = "final-out"


def build(make_app, w, buffer=None):
    app = make_app()
    table = (app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key().windowed_by(w)
             .count(store=hotstate.StoreSpec("counts", kind="memory")))
    final = table.suppress_until_window_closes(buffer or hotstate.StoreSpec("counts-suppress", kind="memory"))
    final.to_stream().to(FINAL, value_serde=serde.INT64)
    return Harness(app, "clicks"), final


def sent(h, key_serde):
    return [(key_serde.deserialize(s.key), struct.unpack(">q", s.value)[0], s.timestamp) for s in h.sent]


tens = st.integers(0, 300).map(lambda n: n * 10)
records = st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), tens, st.booleans()), min_size=1, max_size=80)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 30).map(lambda n: n * 10), ratio=st.sampled_from([1, 2, 3]),
       grace=st.integers(0, 40).map(lambda n: n * 10),
       recs=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), tens,
                               st.sampled_from(["none", "none", "commit", "abort"])), min_size=1, max_size=80))
def test_suppressed_time_windows_emit_each_final_result_once(make_app, size, ratio, grace, recs):
    advance = max(1, size // ratio)
    w = windows.hopping(size, advance, grace)
    h, _ = build(make_app, w)
    ref = Reference(size, advance, grace, w.retention_ms)
    key_serde = serde.time_windowed(serde.STRING, size)
    final = SuppressReference(grace, lambda k, s, e: key_serde.serialize(hotstate.Windowed(k, s, e)))
    since_commit: list = []  # records processed since the last commit, and the output before them
    sent_at_commit = 0
    for key, ts, action in recs:
        h.pipe(key, 1, timestamp=ts)
        since_commit.append((key, ts))
        done = len(ref.emitted)
        ref.process(key, ts, lambda old: 1 if old is None else old + 1)
        final.updates(ref.emitted[done:], ref.stream_time)
        if action == "abort":  # an aborted transaction: its output is discarded, the records processed again
            h.task.drop_uncommitted()
            del h.sent[sent_at_commit:]
            for k, t in since_commit:
                h.pipe(k, 1, timestamp=t)
        if action in ("commit", "abort"):
            h.commit()
            since_commit, sent_at_commit = [], len(h.sent)
    got = sent(h, key_serde)
    assert got == [(hotstate.Windowed(k, s, e), v, t) for k, s, e, v, t in final.emitted]
    assert len({w for w, _, _ in got}) == len(got)  # once per window
    for w, v, _ in got:  # the window's final count, and it is closed
        assert v == ref.values[(w.key, w.start_ms)] and w.end_ms + grace <= ref.stream_time
    h.commit()
    buffered = {k for k, _ in h.store("counts-suppress").all()}
    assert len(buffered) == len(final.held)  # the windows still open wait in the buffer


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(gap=st.integers(1, 20).map(lambda n: n * 10), grace=st.integers(0, 30).map(lambda n: n * 10), recs=records)
def test_suppressed_sessions_emit_closed_sessions_and_never_merged_ones(make_app, gap, grace, recs):
    w = windows.session(gap, grace)
    h, _ = build(make_app, w)
    ref = SessionReference(gap, grace, w.retention_ms)
    key_serde = serde.session_windowed(serde.STRING)
    final = SuppressReference(gap + grace, lambda k, s, e: key_serde.serialize(hotstate.Windowed(k, s, e)))
    for key, ts, commit in recs:
        h.pipe(key, 1, timestamp=ts)
        done = len(ref.emitted)
        ref.process(key, ts)
        final.updates(ref.emitted[done:], ref.stream_time)
        if commit:
            h.commit()
    assert sent(h, key_serde) == [(hotstate.Windowed(k, s, e), v, t) for k, s, e, v, t in final.emitted]
    assert all(v is not None for *_, v, _ in final.emitted)


def test_a_window_is_emitted_once_stream_time_reaches_its_end_plus_grace(make_app):
    h, _ = build(make_app, windows.tumbling(size_ms=100, grace_ms=50))
    h.pipe("k", 1, timestamp=10)
    h.pipe("k", 1, timestamp=90)
    h.pipe("k", 1, timestamp=149)  # [0, 100) still accepts records: nothing final yet
    assert h.sent == []
    h.pipe("k", 1, timestamp=95)  # within grace
    h.pipe("x", 1, timestamp=150)  # stream time 150 = end + grace: [0, 100) is final
    assert sent(h, serde.time_windowed(serde.STRING, 100)) == [(hotstate.Windowed("k", 0, 100), 3, 95)]
    h.pipe("k", 1, timestamp=50)  # late: dropped by the aggregation, nothing more emitted
    assert len(h.sent) == 1


def test_the_buffer_rewinds_with_dropped_uncommitted_work(make_app):
    """An aborted transaction drops the buffer's uncommitted writes with the rest: the redo emits the same."""
    h, _ = build(make_app, windows.tumbling(100, 0))
    h.pipe("k", 1, timestamp=50)
    h.commit()
    h.pipe("k", 1, timestamp=60)
    h.pipe("k", 1, timestamp=100)  # [0, 100) final: emitted with count 2
    first = list(h.sent)
    h.task.drop_uncommitted()
    h.sent.clear()
    h.pipe("k", 1, timestamp=60)
    h.pipe("k", 1, timestamp=100)
    assert h.sent == first and struct.unpack(">q", first[0].value)[0] == 2


def test_suppress_refuses_bad_buffer_stores(make_app):
    app = make_app()
    table = (app.stream("clicks", key_serde=serde.STRING, value_serde=serde.INT64).group_by_key()
             .windowed_by(windows.tumbling(10, 0)).count(store="n"))
    with pytest.raises(hotstate.TopologyError, match="cannot be a suppression buffer"):
        table.suppress_until_window_closes(hotstate.StoreSpec("b", kind="window-memory", retention_ms=5))
    with pytest.raises(hotstate.TopologyError, match="buffer_store must be"):
        table.suppress_until_window_closes(42)
    final = table.suppress_until_window_closes()
    assert (final.buffer.name, final.buffer.kind) == ("n-suppress", "rocksdb")
    with pytest.raises(hotstate.TopologyError, match="'n-suppress' already exists"):
        table.suppress_until_window_closes()
    assert table.suppress_until_window_closes("other").buffer.name == "other"


def test_sliding_windows_final_results_follow_kafka_streams_rule(make_app):
    """Sliding windows are emitted once ``end + grace <= stream time`` (Kafka Streams' suppression rule); the
    aggregation still accepts a record at exactly that boundary, and the window is then emitted again."""
    h, _ = build(make_app, windows.sliding(time_difference_ms=10, grace_ms=5))
    key_serde = serde.time_windowed(serde.STRING, 10)

    def of_k():
        return [e for e in sent(h, key_serde) if e[0].key == "k"]
    h.pipe("k", 1, timestamp=100)  # [90, 100]
    h.pipe("k", 1, timestamp=104)  # [94, 104], and 100's right window [101, 111]
    assert h.sent == []
    h.pipe("x", 1, timestamp=106)  # stream time 106: [90, 100] is final (100 + 5 <= 106), the others not yet
    assert of_k() == [(hotstate.Windowed("k", 90, 100), 1, 100)]
    h.pipe("x", 1, timestamp=116)  # 104 + 5 <= 116 and 111 + 5 <= 116: by end
    assert of_k()[1:] == [(hotstate.Windowed("k", 94, 104), 2, 104), (hotstate.Windowed("k", 101, 111), 1, 104)]
    h.pipe("k", 1, timestamp=106)  # [101, 111] ends at 116 - 5: still open to the aggregation, so emitted again
    assert of_k()[3:] == [(hotstate.Windowed("k", 101, 111), 2, 106)]


def test_suppress_closes_windows_by_the_aggregations_stream_time_not_the_tasks(make_app):
    """Found side by side with Kafka Streams (tests/integration/test_windowed_vs_kstreams.py): its suppression
    keeps its own observed stream time, moved by the updates that reach it. A record without a key ahead in time
    moves the task's stream time but closes no window of the aggregation, so the window still counts records and
    its final result must wait: with the task's stream time, a tumbling window was emitted once per update."""
    h, _ = build(make_app, windows.tumbling(100, 0))
    key_serde = serde.time_windowed(serde.STRING, 100)
    for key, ts in [("a", 10), (None, 500), ("a", 20), ("a", 30)]:
        h.pipe(key, 1, timestamp=ts)
    assert sent(h, key_serde) == []  # the window [0, 100) is open for the aggregation: it took all three
    h.pipe("a", 1, timestamp=150)  # the aggregation's stream time reaches the window's end
    assert sent(h, key_serde) == [(hotstate.Windowed("a", 0, 100), 3, 30)]
    h.pipe("b", 1, timestamp=600)  # the keyless record's time, now reached by a keyed one
    assert sent(h, key_serde) == [(hotstate.Windowed("a", 0, 100), 3, 30), (hotstate.Windowed("a", 100, 200), 1, 150)]


@pytest.mark.parametrize("w", [windows.session(50, 0), windows.sliding(50, 20)])
def test_suppressed_sessions_and_sliding_windows_wait_for_the_aggregations_stream_time(make_app, w):
    """The same for sessions ([100, 110] closes at 160) and sliding windows ([50, 100] at 120)."""
    h, _ = build(make_app, w)
    for key, ts in [("a", 100), (None, 900), ("a", 110)]:
        h.pipe(key, 1, timestamp=ts)
    assert h.sent == []


def test_final_results_carry_no_headers_of_the_record_that_closed_the_window(make_app):
    h, _ = build(make_app, windows.tumbling(size_ms=100, grace_ms=0))
    h.pipe("k", 1, timestamp=10, headers=[("from", b"k")])
    h.pipe("x", 1, timestamp=100, headers=[("from", b"x")])  # closes [0, 100)
    assert [(s.timestamp, s.headers) for s in h.sent] == [(10, None)]
