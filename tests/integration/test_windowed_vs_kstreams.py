"""Side by side with Kafka Streams 4.4: the same timed input (in order, out of order within grace, late beyond it;
several keys, each in one of several partitions; a few keyless records ahead in time) through Kafka Streams'
windowed counts (tests/kstreams_windows, built with Maven on first use) and hotstate's, under both guarantees.

- Tumbling and hopping: every window's updates (value, timestamp), hence its final value, the set of windows and
  the late drops per task must be identical, and equal to the plain reference.
- Session and sliding counts, and suppress_until_window_closes of those and of a tumbling count (Kafka Streams'
  suppress(untilWindowCloses(unbounded()))): each key's whole sequence of updates (a session merge: the
  tombstones of the merged sessions, then the new session; a sliding record: its windows newest first, then the
  ones it creates), every final result and the late drops per task must be identical; sessions also equal the
  plain reference, sliding windows' final values the definition.

A restart test shows the difference hotstate keeps: after a restart its aggregation resumes stream time from its
store, Kafka Streams' starts again (docs/architecture.md, "Time and windows").

Run alone: scripts/test tests/integration/test_windowed_vs_kstreams.py (about 75 s with the jar built; the first run
builds the jar: about 20 s with Maven's cache filled, longer on a fresh machine that downloads Kafka Streams and
the Maven plugins)."""
from __future__ import annotations

import random
import struct
import time
from collections import defaultdict
from pathlib import Path

import pytest

import hotstate
from hotstate import serde, windows
from kafka_helpers import REPO, partition_for, wait_for
from kstreams_apps import JavaApp, maven_jar
from window_reference import Reference, SessionReference, SlidingReference

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # the first Maven build may download a lot

KS_DIR = REPO / "tests" / "kstreams_windows"
JAR = KS_DIR / "target" / "kstreams-windows-check.jar"
PARTITIONS = 3
KEYS = [f"user-{i}" for i in range(8)]
# name -> (size, advance, grace): a tumbling and a hopping window whose advance does not divide its size.
WINDOWS = {"tumbling": (1_000, 1_000, 300), "hopping": (1_000, 300, 200)}
GRID = 50  # timestamps on a 50 ms grid: windows often close exactly at the stream time (end + grace == stream time)


def kstreams_jar() -> Path:
    return maven_jar(KS_DIR, JAR)


class KStreamsApp(JavaApp):
    """The windowed-counts app (the jar's main class)."""

    def __init__(self, args: list[str], log: Path):
        super().__init__(["java", "-Xmx512m", "-jar", str(kstreams_jar()), *args], log)

    def stop(self) -> dict:  # type: ignore[override]
        """Closes stdin; returns the app's last metrics line once it closed cleanly."""
        super().stop()
        return self.events("metrics")[-1]


def make_records(rng: random.Random, base: int, n: int) -> list[tuple[str | None, int, int]]:
    """(key, timestamp, partition): time moves on by 0 or 50 ms a record; a record is late by a multiple of 50 ms,
    within the grace (often), or beyond it (sometimes: up to three windows back). A few records have no key and a
    timestamp ahead of the others: both aggregations drop them, and their time must not close windows."""
    out, now = [], base
    for _ in range(n):
        now += rng.choice([0, GRID])
        kind = rng.random()
        if kind < 0.01:
            out.append((None, now + rng.randrange(GRID, 2_000, GRID), rng.randrange(PARTITIONS)))
            continue
        if kind < 0.6:
            ts = now
        elif kind < 0.9:
            ts = now - rng.randrange(0, 500, GRID)
        else:
            ts = now - rng.randrange(500, 3_000, GRID)
        key = rng.choice(KEYS)
        out.append((key, max(base, ts), partition_for(key, PARTITIONS)))
    return out


def window_key(raw: bytes) -> tuple[str, int]:
    return raw[:-8].decode(), struct.unpack(">q", raw[-8:])[0]


def updates(kafka, topic: str) -> dict[tuple[str, int], list[tuple[int, int]]]:
    """(key, window start) -> its updates (count, record timestamp) in output order (one window, one partition)."""
    got = defaultdict(list)
    for m in kafka.read_all(topic):
        got[window_key(m.key())].append((struct.unpack(">q", m.value())[0], m.timestamp()[1]))
    return dict(got)


def first_difference(ours: dict, theirs: dict, ref: dict) -> str:
    diff = [w for w in sorted(set(ours) | set(theirs)) if ours.get(w) != theirs.get(w)]
    if not diff:
        return "no difference"
    w = diff[0]
    return (f"{len(diff)} windows differ; first {w}: hotstate {ours.get(w)}, Kafka Streams {theirs.get(w)}, "
            f"reference {ref.get(w)} ({len(ours)} / {len(theirs)} windows)")


def committed_to_end(kafka, group: str, source: str, ends: dict[int, int]) -> bool:
    got = kafka.committed(group, source, PARTITIONS)
    return all(got.get(p, -1) >= end for p, end in ends.items())


def run_both(kafka, app: hotstate.App, ks: KStreamsApp, ks_id: str, source: str) -> tuple[dict, dict]:
    """Runs hotstate's app and the Kafka Streams app until both committed the whole source; closes both.
    Returns (hotstate's metrics, Kafka Streams' dropped-records-total per task)."""
    ends = kafka.ends(source)
    try:
        app.start()
        try:
            def both_done() -> bool:
                ks.check_alive()
                if app.state is hotstate.AppState.ERROR:
                    app.wait_until_running(timeout_s=0)  # raises the app's error
                return (committed_to_end(kafka, app.config.group_id, source, ends)
                        and committed_to_end(kafka, ks_id, source, ends))
            wait_for(both_done, "both apps to commit the whole input", 90, 0.2,
                     detail=lambda: (app.metrics()["records_processed_total"], ks.lines[-3:]))
            metrics = app.metrics()
        finally:
            assert app.close()
        return metrics, ks.stop()["dropped_records_total"]
    finally:
        ks.kill()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_windowed_counts_equal_kafka_streams(kafka, tmp_path, tmp_state_dir, guarantee):
    kstreams_jar()  # before any topic exists: a first build takes long
    assert {partition_for(k, PARTITIONS) for k in KEYS} == set(range(PARTITIONS))
    source = kafka.create_topic(partitions=PARTITIONS, prefix="vs-ks-in")
    outs = {(system, name): kafka.create_topic(partitions=PARTITIONS, prefix=f"vs-ks-{system}-{name}")
            for system in ("hs", "ks") for name in WINDOWS}
    suppressed = kafka.create_topic(partitions=PARTITIONS, prefix="vs-ks-ks-final")
    base = (int(time.time() * 1000) // 60_000 - 60) * 60_000  # an hour ago, on a window boundary of both
    records = make_records(random.Random(11), base, 2_000)
    producer = kafka.producer()
    for key, ts, p in records:
        producer.produce(source, b"click", None if key is None else key.encode(), partition=p, timestamp=ts)
    assert producer.flush(30) == 0

    # The reference (tests/window_reference.py) of each aggregation, per partition; the data has what it should.
    refs = {name: {p: Reference(size, advance, grace, size + grace) for p in range(PARTITIONS)}
            for name, (size, advance, grace) in WINDOWS.items()}
    stream_time: dict[int, int] = defaultdict(lambda: -1)  # per partition: the aggregations' (keyed records)
    task_time: dict[int, int] = defaultdict(lambda: -1)  # per partition: every record's
    null_keys: dict[str, int] = defaultdict(int)  # per task: records without a key, once per aggregation
    t_size, _, t_grace = WINDOWS["tumbling"]
    out_of_order_kept = at_the_edge = closed_by_null_keys = 0  # in the tumbling windows
    for key, ts, p in records:
        task_time[p] = max(task_time[p], ts)
        if key is None:
            null_keys[f"0_{p}"] += len(WINDOWS)
            continue
        for rs in refs.values():
            rs[p].process(key, ts, lambda old: 1 if old is None else old + 1)
        closes = ts // t_size * t_size + t_size + t_grace
        out_of_order_kept += ts < stream_time[p] < closes  # older than stream time, yet accepted
        at_the_edge += closes == stream_time[p]  # dropped exactly when end + grace == stream time
        closed_by_null_keys += max(ts, stream_time[p]) < closes <= task_time[p]  # on time, late by the task's time
        stream_time[p] = max(stream_time[p], ts)
    assert out_of_order_kept > 100 and at_the_edge > 0 and closed_by_null_keys > 0
    assert all(r.dropped > 0 for rs in refs.values() for r in rs.values())

    # Both apps read the same topic at the same time, each with its own group and outputs.
    app_id = kafka.app_id("vs-ks-hs")
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_state_dir),
                       processing_guarantee=guarantee, commit_interval_ms=100)
    stream = app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
    for name, (size, advance, grace) in WINDOWS.items():
        table = stream.group_by_key().windowed_by(windows.hopping(size, advance, grace)).count(store=f"counts-{name}")
        table.to_stream().to(outs["hs", name], value_serde=serde.INT64)
    ks_id = kafka.app_id("vs-ks-ks")
    specs = [f"{outs['ks', name]}:{size}:{advance}:{grace}" + (f":{suppressed}" if name == "tumbling" else "")
             for name, (size, advance, grace) in WINDOWS.items()]
    ks = KStreamsApp([kafka.bootstrap, ks_id, str(tmp_path / "ks-state"), guarantee, source, *specs],
                     tmp_path / "kstreams.log")
    started = time.monotonic()
    metrics, theirs_dropped = run_both(kafka, app, ks, ks_id, source)
    print(f"both apps done in {time.monotonic() - started:.1f}s; Kafka Streams: {ks.events('config')}")

    # Every window's updates, in order, with their timestamps; hence the same windows and final values.
    for name in WINDOWS:
        ref = defaultdict(list)
        for r in refs[name].values():
            for key, start, _end, value, ts in r.emitted:
                ref[(key, start)].append((value, ts))
        ours, theirs = updates(kafka, outs["hs", name]), updates(kafka, outs["ks", name])
        assert set(ours) == set(theirs), f"{name}: windows only in hotstate {sorted(set(ours) - set(theirs))[:5]}, " \
                                         f"only in Kafka Streams {sorted(set(theirs) - set(ours))[:5]}"
        final = {w: u[-1] for w, u in ours.items()}
        assert final == {w: u[-1] for w, u in theirs.items()}, f"{name}: {first_difference(ours, theirs, ref)}"
        assert ours == theirs, f"{name}: {first_difference(ours, theirs, ref)}"
        assert ours == ref, f"{name}: both agree, the reference not: {first_difference(ours, ref, ref)}"

    # Late drops per task: each app counts a record once per closed window it is dropped for, both aggregations
    # of a task together. Kafka Streams' task-level dropped-records-total adds the records without a key (once per
    # aggregation); hotstate counts those per instance.
    late = {f"0_{p}": refs["tumbling"][p].dropped + refs["hopping"][p].dropped for p in range(PARTITIONS)}
    assert metrics["dropped_late_records_total"] == late
    assert metrics["dropped_records_null_key_total"] == sum(null_keys.values()) > 0
    assert {t: n for t, n in theirs_dropped.items() if n} == {t: n + null_keys[t] for t, n in late.items()}

    # Kafka Streams' suppress(untilWindowCloses): one record per tumbling window closed at the end (end + grace <=
    # its partition's stream time), its final count and timestamp; the windows still open are not emitted.
    final_ks = {w: u[-1] for w, u in updates(kafka, outs["ks", "tumbling"]).items()}
    closed = {(k, s): v for (k, s), v in final_ks.items()
              if s + t_size + t_grace <= stream_time[partition_for(k, PARTITIONS)]}
    got = updates(kafka, suppressed)
    assert all(len(u) == 1 for u in got.values()), "suppress emitted a window twice"
    assert {w: u[0] for w, u in got.items()} == closed and len(closed) < len(final_ks)


def test_after_a_restart_hotstate_keeps_stream_time_and_kafka_streams_does_not(kafka, tmp_path, tmp_state_dir):
    """A kept difference (docs/architecture.md, "Time and windows"): hotstate's windowed aggregation resumes its
    stream time from its store after a restart; Kafka Streams 4.4's KStreamWindowAggregate starts its observed
    stream time again from nothing, so a record late for a window that closed before the restart is counted into
    it if it comes first. Both apps restart cleanly (state kept) and read one such record."""
    source = kafka.create_topic(partitions=1, prefix="vs-ks-in")
    out_hs, out_ks = (kafka.create_topic(partitions=1, prefix=f"vs-ks-{s}-tumbling") for s in ("hs", "ks"))
    size, _, grace = WINDOWS["tumbling"]
    base = (int(time.time() * 1000) // 60_000 - 60) * 60_000
    producer = kafka.producer()

    def produce(stamps: list[int]) -> None:
        for ts in stamps:
            producer.produce(source, b"click", b"user-0", partition=0, timestamp=ts)
        assert producer.flush(30) == 0

    app_id, ks_id = kafka.app_id("vs-ks-hs"), kafka.app_id("vs-ks-ks")
    runs = iter(range(2))

    def apps() -> tuple[hotstate.App, KStreamsApp]:
        app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_state_dir),
                           commit_interval_ms=100)
        (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING).group_by_key()
            .windowed_by(windows.tumbling(size, grace)).count(store="counts-tumbling")
            .to_stream().to(out_hs, value_serde=serde.INT64))
        ks = KStreamsApp([kafka.bootstrap, ks_id, str(tmp_path / "ks-state"), "at_least_once", source,
                          f"{out_ks}:{size}:{size}:{grace}"], tmp_path / f"kstreams-{next(runs)}.log")
        return app, ks

    produce([base + 100, base + 1_100, base + 1_200, base + 5_000])  # stream time base + 5000
    ours, theirs = run_both(kafka, *apps(), ks_id, source)
    assert updates(kafka, out_hs) == updates(kafka, out_ks)
    produce([base + 1_500])  # window [base + 1000, base + 2000) closed at base + 2300
    ours, theirs = run_both(kafka, *apps(), ks_id, source)
    hs, ks = updates(kafka, out_hs), updates(kafka, out_ks)
    late = ("user-0", base + 1_000)
    assert {w: u for w, u in hs.items() if w != late} == {w: u for w, u in ks.items() if w != late}
    # hotstate: the window stays closed, the record is dropped and counted.
    assert hs[late] == [(1, base + 1_100), (2, base + 1_200)] and ours["dropped_late_records_total"] == {"0_0": 1}
    # Kafka Streams: its first record after the restart sets its stream time; the closed window takes it.
    assert ks[late] == hs[late] + [(3, base + 1_500)] and not any(theirs.values())


# Session and sliding counts, and suppress_until_window_closes of them and of a tumbling count: name -> window spec
# for the Java app (after the output topic) and hotstate's windows. A 150 ms gap with a key's records ~200 ms apart
# on average: sessions end often and out-of-order records bridge them (merges, with tombstones).
SESSION_GAP, SESSION_GRACE = 150, 200
SLIDING_DIFF, SLIDING_GRACE = 500, 300
TUMBLING_SIZE, TUMBLING_GRACE = WINDOWS["tumbling"][0], WINDOWS["tumbling"][2]
KINDS = {
    "session": (f"session:{SESSION_GAP}:{SESSION_GRACE}", windows.session(SESSION_GAP, SESSION_GRACE)),
    "sliding": (f"sliding:{SLIDING_DIFF}:{SLIDING_GRACE}", windows.sliding(SLIDING_DIFF, SLIDING_GRACE)),
    "tumbling": (f"{TUMBLING_SIZE}:{TUMBLING_SIZE}:{TUMBLING_GRACE}",
                 windows.tumbling(TUMBLING_SIZE, TUMBLING_GRACE)),
}
# How long after a window's end its result is final (Kafka Streams' GraphGraceSearchUtil), and the window's end.
SUPPRESS_MS = {"session": SESSION_GAP + SESSION_GRACE, "sliding": SLIDING_GRACE, "tumbling": TUMBLING_GRACE}
END = {"session": None, "sliding": SLIDING_DIFF, "tumbling": TUMBLING_SIZE}


def sequences(kafka, topic: str, kind: str) -> dict[str, list[tuple[int, int, int | None, int]]]:
    """key -> its output records (window start, end, count or None for a tombstone, timestamp) in output order.
    The output topics have one partition, so a key's records (all from one task) keep their processing order."""
    got = defaultdict(list)
    for m in kafka.read_all(topic):
        raw = m.key()
        if kind == "session":  # SessionKeySchema: key bytes, end, start
            key, (end, start) = raw[:-16].decode(), struct.unpack(">qq", raw[-16:])
        else:
            (key, start), end = window_key(raw), None
            end = start + END[kind]
        value = None if m.value() is None else struct.unpack(">q", m.value())[0]
        got[key].append((start, end, value, m.timestamp()[1]))
    return dict(got)


def per_window(seqs: dict) -> dict[tuple[str, int, int], list[tuple[int | None, int]]]:
    out = defaultdict(list)
    for key, seq in seqs.items():
        for start, end, value, ts in seq:
            out[(key, start, end)].append((value, ts))
    return dict(out)


def first_sequence_difference(ours: dict, theirs: dict) -> str:
    for key in sorted(set(ours) | set(theirs)):
        a, b = ours.get(key, []), theirs.get(key, [])
        if a != b:
            i = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            return (f"key {key}: first difference at update {i} of {len(a)} / {len(b)}: {a[max(0, i - 2):i + 3]} / "
                    f"{b[max(0, i - 2):i + 3]}")
    return "no difference"


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_session_sliding_and_suppress_equal_kafka_streams(kafka, tmp_path, tmp_state_dir, guarantee):
    """Session and sliding counts and suppress_until_window_closes (of those and of a tumbling count) side by side
    with Kafka Streams 4.4's count and suppress(untilWindowCloses(unbounded())), on the same kind of input as
    above (out of order, late, keyless records ahead in time). Each key's whole sequence of updates (a session's
    merges: the tombstones of the merged sessions, then the new session), every final result and the late drops
    per task must be identical."""
    kstreams_jar()
    source = kafka.create_topic(partitions=PARTITIONS, prefix="vs-ks-in")
    outs = {(system, name, what): kafka.create_topic(partitions=1, prefix=f"vs-ks-{system}-{name}-{what}")
            for system in ("hs", "ks") for name in KINDS for what in ("updates", "final")}
    base = (int(time.time() * 1000) // 60_000 - 60) * 60_000
    records = make_records(random.Random(12), base, 1_500)
    producer = kafka.producer()
    for key, ts, p in records:
        producer.produce(source, b"click", None if key is None else key.encode(), partition=p, timestamp=ts)
    assert producer.flush(30) == 0

    # The plain references (tests/window_reference.py), per partition, and each partition's stream time (keyed).
    # Retention: the default (gap + grace, as Kafka Streams'): a session that ended before it is not merged.
    retention = {name: w.retention_ms for name, (_, w) in KINDS.items()}
    sessions = {p: SessionReference(SESSION_GAP, SESSION_GRACE, retention["session"]) for p in range(PARTITIONS)}
    sliding = {p: SlidingReference(SLIDING_DIFF, SLIDING_GRACE, retention["sliding"]) for p in range(PARTITIONS)}
    stream_time: dict[int, int] = defaultdict(lambda: -1)
    null_keys: dict[str, int] = defaultdict(int)
    partial_records: list[tuple[str, int]] = []  # late for some of their sliding windows, not all
    for key, ts, p in records:
        if key is None:
            null_keys[f"0_{p}"] += len(KINDS)
            continue
        sessions[p].process(key, ts)
        partial = sliding[p].partial
        sliding[p].process(key, ts)
        if sliding[p].partial > partial:
            partial_records.append((key, ts))
        stream_time[p] = max(stream_time[p], ts)
    merges = sum(v is None for r in sessions.values() for _k, _s, _e, v, _ts in r.emitted)
    partial = sum(r.partial for r in sliding.values())
    print(f"session tombstones {merges}, late drops: sessions {sum(r.dropped for r in sessions.values())}, "
          f"sliding {sum(r.dropped for r in sliding.values())} (+ {partial} records late for some windows)")
    assert merges > 20 and all(r.dropped > 0 for r in sessions.values()) and all(r.dropped for r in sliding.values())

    app_id = kafka.app_id("vs-ks-hs")
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_state_dir),
                       processing_guarantee=guarantee, commit_interval_ms=100)
    stream = app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
    for name, (_spec, hs_windows) in KINDS.items():
        table = stream.group_by_key().windowed_by(hs_windows).count(store=f"counts-{name}")
        table.to_stream().to(outs["hs", name, "updates"], value_serde=serde.INT64)
        table.suppress_until_window_closes().to_stream().to(outs["hs", name, "final"], value_serde=serde.INT64)
    ks_id = kafka.app_id("vs-ks-ks")
    specs = [f"{outs['ks', name, 'updates']}:{spec}:{outs['ks', name, 'final']}" for name, (spec, _) in KINDS.items()]
    ks = KStreamsApp([kafka.bootstrap, ks_id, str(tmp_path / "ks-state"), guarantee, source, *specs],
                     tmp_path / "kstreams.log")
    started = time.monotonic()
    metrics, theirs_dropped = run_both(kafka, app, ks, ks_id, source)
    print(f"both apps done in {time.monotonic() - started:.1f}s; Kafka Streams: {ks.events('config')}")

    got = {(system, name, what): sequences(kafka, outs[system, name, what], name)
           for system in ("hs", "ks") for name in KINDS for what in ("updates", "final")}
    problems = []
    for name in KINDS:
        for what in ("updates", "final"):
            ours, theirs = got["hs", name, what], got["ks", name, what]
            if ours != theirs:
                problems.append(f"{name} {what}, hotstate / Kafka Streams: {first_sequence_difference(ours, theirs)}")
    assert not problems, "\n".join(problems)

    # Sessions: every update, tombstones included, as the plain reference has them.
    ref = defaultdict(list)
    for r in sessions.values():
        for key, start, end, value, ts in r.emitted:
            ref[key].append((start, end, value, ts))
    assert got["ks", "session", "updates"] == dict(ref), \
        f"Kafka Streams / reference: {first_sequence_difference(got['ks', 'session', 'updates'], ref)}"
    # Sliding: every window's last update is its aggregate by the definition, away from the records that were
    # late for some of their windows only (the reference is not exact near those).
    final = {(k, s): u[-1][0] for (k, s, _e), u in per_window(got["ks", "sliding", "updates"]).items()}
    near = {key: [t for k, t in partial_records if k == key] for key in KEYS}
    exact = lambda w: all(abs(w[1] - t) > 2 * SLIDING_DIFF + 1 for t in near[w[0]])  # noqa: E731
    ref_sliding = {w: v for r in sliding.values() for w, v in r.windows().items() if exact(w)}
    print(f"sliding windows checked against the definition: {len(ref_sliding)} of {len(final)}")
    assert {w: v for w, v in final.items() if exact(w)} == ref_sliding and len(ref_sliding) > len(final) / 2
    # Final results: one per window (a session merged away has none) closed at the end, its last update.
    for name in KINDS:
        last = {w: u[-1] for w, u in per_window(got["ks", name, "updates"]).items()}
        closed = {w: u for w, u in last.items() if u[0] is not None
                  and w[2] + SUPPRESS_MS[name] <= stream_time[partition_for(w[0], PARTITIONS)]}
        finals = per_window(got["ks", name, "final"])
        assert {w: u[-1] for w, u in finals.items()} == closed and len(closed) < len(last), name
        if name == "tumbling":  # sessions and sliding windows may be emitted again at the boundary, as in both
            assert all(len(u) == 1 for u in finals.values()), f"{name}: a window's final result emitted twice"
        elif name == "session":  # a session at end + gap + grace == stream time: emitted, then still accepted
            assert any(len(u) > 1 for u in finals.values()), "the input no longer has the boundary case"

    late = {t: n - null_keys[t] for t, n in theirs_dropped.items() if n - null_keys[t]}
    assert metrics["dropped_late_records_total"] == late and late
    assert metrics["dropped_records_null_key_total"] == sum(null_keys.values()) > 0
