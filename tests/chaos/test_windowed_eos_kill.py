"""kill -9 of an exactly-once windowed count, several times while it processes: every window's updates in the
output topic (read_committed) are exactly the reference's, late drops included (stream time is rewound with
aborted work and resumed from the store after a restart), the store holds the reference's windows at the end,
and no restart restores from below what the killed process had in its store (never a wipe)."""
from __future__ import annotations

import os
import random
import struct
import threading
import time
from collections import defaultdict

import pytest

from kafka_helpers import partition_for, wait_for
from scenario import Runner
from window_reference import Reference

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(420)]

PARTITIONS = 2
SIZE, ADVANCE, GRACE, RETENTION = 1_000, 500, 200, 3_600_000  # nothing expires within the test
USERS = [f"user-{i:03d}" for i in range(200)]


class TimedFeeder:
    """Produces (user, event time) records in order until stopped: time moves on 2 ms a record, a tenth of the
    records are late by up to 1.5 s (within and beyond grace). Keeps what it produced, in production order."""

    def __init__(self, kafka, source: str, rng: random.Random):
        self._kafka, self._source, self._rng = kafka, source, rng
        self.records: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self.errors: list[BaseException] = []
        self._base = int(time.time() * 1000) // 1000 * 1000
        self._thread = threading.Thread(target=self._run, name="timed-feeder", daemon=True)

    def _run(self) -> None:
        producer = self._kafka.producer()
        try:
            i = 0
            while not self._stop.is_set():
                for _ in range(200):
                    late = self._rng.randint(0, 1_500) if self._rng.random() < 0.1 else 0
                    user, ts = self._rng.choice(USERS), max(self._base, self._base + i * 2 - late)
                    producer.produce(self._source, b"x", user.encode(), partition=partition_for(user, PARTITIONS),
                                     timestamp=ts)
                    self.records.append((user, ts))
                    i += 1
                assert producer.flush(60) == 0
                time.sleep(0.05)
        except BaseException as exc:
            self.errors.append(exc)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[tuple[str, int]]:
        self._stop.set()
        self._thread.join(120)
        assert not self.errors, self.errors
        return list(self.records)


def test_kill_9_of_an_exactly_once_windowed_count_keeps_every_window_exact(kafka, tmp_state_dir, tmp_path):
    seed = int(os.environ.get("HOTSTATE_CHAOS_SEED", "11"))
    rng = random.Random(seed)
    source = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-win")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-win-out")
    app_id = kafka.app_id("chaos-win")
    args = ["--windowed", f"{SIZE},{ADVANCE},{GRACE},{RETENTION}"]
    stderr_path = tmp_path / "runner.stderr"
    feeder = TimedFeeder(kafka, source, rng)
    feeder.start()
    durable: dict[int, int] = {}
    try:
        for kill in range(3):
            runner = Runner(kafka, app_id, tmp_state_dir, source, sink, stderr_path, "exactly_once_v2", args)
            try:
                runner.wait_event("running", 120)
                for e in runner.of("restore_start"):  # never below what the killed process had in its store
                    assert e["start"] >= durable.get(e["partition"], 0), (e, durable)
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
            for e in runner.of("restore_start"):
                assert e["start"] >= durable.get(e["partition"], 0), (e, durable)
            refs = {p: Reference(SIZE, ADVANCE, GRACE, RETENTION) for p in range(PARTITIONS)}
            for user, ts in records:
                refs[partition_for(user, PARTITIONS)].process(user, ts, lambda old: 1 if old is None else old + 1)
            assert sum(r.dropped for r in refs.values()) > 0  # the data has records late beyond grace
            expected = defaultdict(list)
            for r in refs.values():
                for k, start, _end, v, ts in r.emitted:
                    expected[(k, start)].append((v, ts))

            def output() -> dict:
                got = defaultdict(list)
                for m in kafka.read_all(sink):
                    key = (m.key()[:-8].decode(), struct.unpack(">q", m.key()[-8:])[0])
                    got[key].append((struct.unpack(">q", m.value())[0], m.timestamp()[1]))
                return dict(got)

            def difference() -> str:
                got = output()
                wrong = [k for k in set(got) | set(expected) if got.get(k) != expected.get(k)]
                k = min(wrong) if wrong else None
                return f"{len(wrong)} windows differ; e.g. {k}: got {got.get(k)}, want {expected.get(k)}"

            wait_for(lambda: output() == expected, "every window's updates in the output, exactly once", 120, 1.0,
                     detail=difference)
            # The changelog (what the store restores from; nothing has expired) holds every window's final count.
            final = {}
            for m in kafka.read_all(kafka.changelog(app_id, "word-counts")):
                window = (m.key()[:-8].decode(), struct.unpack(">q", m.key()[-8:])[0])
                final[window] = struct.unpack(">q", m.value()[8:])[0]
            assert final == {w: v for r in refs.values() for w, v in r.values.items()}
        finally:
            runner.terminate()
            runner.close_files()
    finally:
        if not feeder._stop.is_set():
            feeder.stop()
