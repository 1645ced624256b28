"""The broker killed (kill -9 of its JVM) several times at random moments while an exactly-once app processes a
steady input; each outage lasts a random while. Every word's output values (read_committed) must be exactly 1, 2,
..., n at the end. A longer hunt than tests/chaos/test_broker_outage.py's single kill, so not part of
scripts/test: ``scripts/outages RUNS [KILLS]`` runs it (HOTSTATE_OUTAGE_KILLS set) and prints one
"outage summary" line per run. A failure keeps the app's log and a copy of the broker's directory and says where
the missing outputs sit (test_broker_outage.where_the_outputs_went)."""
from __future__ import annotations

import os
import random
import signal
import time

import pytest

from kafka_helpers import wait_for, words
from scenario import PARTITIONS, Feeder, Runner, exactly_once_violations, output_sequences
from test_broker_outage import broker, broker_pid, keep_broker_dir, own_broker, where_the_outputs_went  # noqa: F401

KILLS = int(os.environ.get("HOTSTATE_OUTAGE_KILLS", "0"))

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(300 + 240 * KILLS),
              pytest.mark.skipif(KILLS <= 0, reason="a long hunt: scripts/outages runs it")]


def test_broker_killed_repeatedly_loses_and_doubles_nothing(own_broker, tmp_path):
    kafka = own_broker
    seed = int(os.environ.get("HOTSTATE_OUTAGE_SEED", str(random.randrange(1_000_000))))
    rng = random.Random(seed)
    source = kafka.create_topic(partitions=PARTITIONS, prefix="outage-words")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="outage-counts")
    app_id = kafka.app_id("outage")
    feeder = Feeder(kafka, source, rng, words(2000), 100)
    app = Runner(kafka, app_id, tmp_path / "state", source, sink, tmp_path / "app.stderr", "exactly_once_v2")
    down: list[float] = []
    try:
        app.wait_event("running", timeout_s=90)
        feeder.start()
        app.wait_event("offsets", timeout_s=30)
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 6.0))
            os.kill(broker_pid(), signal.SIGKILL)
            down.append(rng.uniform(0.5, 12.0))
            time.sleep(down[-1])
            broker("start")
            seen = len(app.of("offsets"))

            def committing_again() -> bool:
                assert app.proc.poll() is None, f"the app died; see {app.stderr.name}"
                assert not feeder.errors, f"the test's feeder failed (not the app): {feeder.errors}"
                return len(app.of("offsets")) > seen + 5

            wait_for(committing_again, "the app to commit again after the outage", 180, 0.2)
        expected = feeder.stop()
        assert not feeder.errors, feeder.errors
        ends = kafka.ends(source)
        wait_for(lambda: kafka.committed(app_id, source, PARTITIONS) == ends, "every input offset committed", 180, 0.3)
        assert app.proc.poll() is None, f"the app died; see {app.stderr.name}"
        bad = exactly_once_violations(expected, output_sequences(kafka, sink))
        print(f"outage summary: seed={seed} kills={KILLS} down_s={[round(d, 1) for d in down]} "
              f"records={sum(expected.values())} words={len(expected)} violations={len(bad)}")
        assert not bad, (f"seed {seed}: {len(bad)} words with lost or doubled updates: {dict(list(bad.items())[:5])}\n"
                         + where_the_outputs_went(kafka, sink, expected, bad, tmp_path))
        app.terminate()
    except BaseException:
        print(keep_broker_dir(tmp_path))  # any failure: the broker's state is evidence too
        raise
    finally:
        feeder.stop()
        app.close_files()
