"""The broker disappears mid-transaction (kill -9 of its JVM) while an exactly-once app processes a steady
input, and comes back. The app must abort and retry, not lose or double an update: at the end each word's
output values (read_committed) are exactly 1, 2, ..., n.

It runs its own broker (scripts/kafka on another port) so the shared one is never touched."""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AdminClient

from kafka_helpers import KAFKA_SCRIPT, Kafka, int64, wait_for, words
from scenario import PARTITIONS, Feeder, Runner, exactly_once_violations, output_sequences

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(400)]

PORT = os.environ.get("HOTSTATE_OUTAGE_KAFKA_PORT", "19392")


def broker(command: str) -> str:
    env = {**os.environ, "HOTSTATE_KAFKA_PORT": PORT}
    proc = subprocess.run([str(KAFKA_SCRIPT), command], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, f"scripts/kafka {command} on port {PORT} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


def broker_pid() -> int:
    cache = Path(os.environ.get("HOTSTATE_CACHE", Path.home() / ".cache" / "hotstate"))
    return int((cache / f"kafka-run-{PORT}" / "kafka.pid").read_text())


@pytest.fixture
def own_broker():
    broker("reset")
    bootstrap = broker("start")
    k = Kafka(bootstrap, AdminClient({"bootstrap.servers": bootstrap}))
    try:
        yield k
    finally:
        broker("reset")


def test_broker_killed_mid_transaction_loses_and_doubles_nothing(own_broker, tmp_path):
    kafka = own_broker
    rng = random.Random(3)
    source = kafka.create_topic(partitions=PARTITIONS, prefix="outage-words")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="outage-counts")
    app_id = kafka.app_id("outage")
    feeder = Feeder(kafka, source, rng, words(2000), 100)
    app = Runner(kafka, app_id, tmp_path / "state", source, sink, tmp_path / "app.stderr", "exactly_once_v2")
    try:
        app.wait_event("running", timeout_s=90)
        feeder.start()
        app.wait_event("offsets", timeout_s=30)
        time.sleep(rng.uniform(0.5, 1.5))
        os.kill(broker_pid(), signal.SIGKILL)  # mid-transaction: commits run every 100 ms
        time.sleep(3)
        broker("start")
        wait_for(lambda: app.proc.poll() is None and len(app.of("offsets")) > 0, "the app to live on", 5)
        seen = len(app.of("offsets"))

        def committing_again() -> bool:
            assert app.proc.poll() is None, f"the app died during the outage; see {app.stderr.name}"
            assert not feeder.errors, f"the test's feeder failed (not the app): {feeder.errors}"
            return len(app.of("offsets")) > seen + 5

        wait_for(committing_again, "the app to commit again after the outage", 120, 0.2)
        expected = feeder.stop()
        assert not feeder.errors, feeder.errors
        ends = kafka.ends(source)
        wait_for(lambda: kafka.committed(app_id, source, PARTITIONS) == ends, "every input offset committed", 120, 0.3)
        assert app.proc.poll() is None, f"the app died during the outage; see {app.stderr.name}"
        bad = exactly_once_violations(expected, output_sequences(kafka, sink))
        assert not bad, (f"{len(bad)} words with lost or doubled updates: {dict(list(bad.items())[:5])}\n"
                         + where_the_outputs_went(kafka, sink, expected, bad, tmp_path))
        app.terminate()
    finally:
        feeder.stop()
        app.close_files()


def where_the_outputs_went(kafka, sink: str, expected, bad: dict, tmp_path: Path) -> str:
    """For a failure: where each missing output value of a few bad words sits in the sink's log read with
    read_uncommitted (written, then aborted or filtered out; or never written), and a copy of the broker's log
    directory for kafka-dump-log.sh (producer ids, epochs, control records)."""
    lines = []
    reader = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": f"diag-{os.getpid()}",
                       "enable.auto.commit": False, "isolation.level": "read_uncommitted",
                       "auto.offset.reset": "earliest", "enable.partition.eof": True})
    everything: dict[tuple[str, int], list[tuple[int, int]]] = {}
    try:
        reader.assign([KTopicPartition(sink, p, 0) for p in range(PARTITIONS)])
        eof: set[int] = set()
        deadline = time.monotonic() + 60
        while len(eof) < PARTITIONS and time.monotonic() < deadline:
            for msg in reader.consume(1000, 0.5):
                if msg.error() is not None:
                    eof.add(msg.partition())
                    continue
                everything.setdefault((msg.key().decode(), int64(msg.value())), []).append((msg.partition(), msg.offset()))
    finally:
        reader.close()
    for word, seq in list(bad.items())[:8]:
        n = expected[word]
        missing = sorted(set(range(1, n + 1)) - set(seq))
        extra = sorted(v for v in set(seq) if seq.count(v) > 1 or not 1 <= v <= n)
        lines.append(f"{word}: counted {n} times in the input, {len(seq)} outputs, the last {seq[-1] if seq else None}; "
                     f"missing {missing}, repeated or beyond {extra}; read_uncommitted finds the missing ones at "
                     f"(partition, offset) { {m: everything.get((word, m), []) for m in missing} }")
    lines.append(keep_broker_dir(tmp_path))
    return "\n".join(lines)


def keep_broker_dir(tmp_path: Path) -> str:
    """Copies the test broker's directory (server.log with the coordinators' lines, data/ for
    ``java -cp '<kafka libs>/*' kafka.tools.DumpLogSegments --files ... --print-data-log``) next to the app's log,
    before the fixture resets it."""
    run = Path(os.environ.get("HOTSTATE_CACHE", Path.home() / ".cache" / "hotstate")) / f"kafka-run-{PORT}"
    copy = tmp_path / "broker"
    shutil.copytree(run, copy, dirs_exist_ok=True)
    return f"the broker's directory (server.log, data/) is copied to {copy}"
