"""kill -9 of an exactly-once session count's final results, several times while it processes: the output
topic (read_committed) holds every closed session's final count exactly once, equal to the reference; the
suppression buffer and the session store come back from disk and their changelogs (never a wipe: no restart
restores the session store from below what the killed process had stored), and stream time with them."""
from __future__ import annotations

import os
import random
import struct
import time
from collections import defaultdict

import pytest

import hotstate
from hotstate import serde
from kafka_helpers import partition_for, wait_for
from scenario import Runner
from test_windowed_eos_kill import TimedFeeder
from window_reference import SessionReference, SuppressReference

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(420)]

PARTITIONS = 2
GAP, GRACE, RETENTION = 300, 200, 3_600_000  # nothing expires within the test
KEY_SERDE = serde.session_windowed(serde.STRING)


def test_kill_9_of_exactly_once_final_session_results_keeps_each_once(kafka, tmp_state_dir, tmp_path):
    seed = int(os.environ.get("HOTSTATE_CHAOS_SEED", "13"))
    rng = random.Random(seed)
    source = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-ses")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-ses-final")
    app_id = kafka.app_id("chaos-ses")
    args = ["--sessions", f"{GAP},{GRACE},{RETENTION}", "--suppress"]
    stderr_path = tmp_path / "runner.stderr"
    feeder = TimedFeeder(kafka, source, rng)
    feeder.start()
    durable: dict[int, int] = {}

    def check_restores(runner) -> None:  # the session store never restores from below what was on disk
        for e in runner.of("restore_start"):
            if e["store"] == "word-counts":
                assert e["start"] >= durable.get(e["partition"], 0), (e, durable)

    try:
        for _ in range(3):
            runner = Runner(kafka, app_id, tmp_state_dir, source, sink, stderr_path, "exactly_once_v2", args)
            try:
                runner.wait_event("running", 120)
                check_restores(runner)
                time.sleep(rng.uniform(0.5, 2.5))
                runner.kill()
                for p, off in runner.durable_offsets().items():
                    durable[p] = max(durable.get(p, 0), off)
            finally:
                runner.close_files()
        records = feeder.stop()
        runner = Runner(kafka, app_id, tmp_state_dir, source, sink, stderr_path, "exactly_once_v2", args)
        try:
            runner.wait_event("running", 120)
            check_restores(runner)
            refs = {p: SessionReference(GAP, GRACE, RETENTION) for p in range(PARTITIONS)}
            finals = {p: SuppressReference(GAP + GRACE,
                                           lambda k, s, e: KEY_SERDE.serialize(hotstate.Windowed(k, s, e)))
                      for p in range(PARTITIONS)}
            for user, ts in records:
                p = partition_for(user, PARTITIONS)
                done = len(refs[p].emitted)
                refs[p].process(user, ts)
                finals[p].updates(refs[p].emitted[done:], refs[p].stream_time)
            assert sum(r.dropped for r in refs.values()) > 0  # the data has records late beyond grace
            expected = defaultdict(list)
            for f in finals.values():
                for k, s, e, v, ts in f.emitted:
                    expected[(k, s, e)].append((v, ts))
            assert len(expected) > 100

            def output() -> dict:
                got = defaultdict(list)
                for m in kafka.read_all(sink):
                    w = KEY_SERDE.deserialize(m.key())
                    got[(w.key, w.start_ms, w.end_ms)].append((struct.unpack(">q", m.value())[0], m.timestamp()[1]))
                return dict(got)

            def difference() -> str:
                got = output()
                wrong = [k for k in set(got) | set(expected) if got.get(k) != expected.get(k)]
                k = min(wrong) if wrong else None
                return f"{len(wrong)} sessions differ; e.g. {k}: got {got.get(k)}, want {expected.get(k)}"

            wait_for(lambda: output() == expected, "every closed session's final count, exactly once", 120, 1.0,
                     detail=difference)
        finally:
            runner.terminate()
            runner.close_files()
    finally:
        if not feeder._stop.is_set():
            feeder.stop()
