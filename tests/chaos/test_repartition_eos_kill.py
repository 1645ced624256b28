"""Exactly-once across a repartition topic under kill -9: the input is keyed by an order id and re-keyed by the
word (``group_by``) through a repartition topic before counting. The repartition write and the input offset
commit are in one transaction (one producer), so after a kill at a random moment while it processes and
commits and a restart on the same state dir, every word's output is exactly 1, 2, ..., n: no update lost,
none doubled, on either side of the repartition topic."""
from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from kafka_helpers import wait_for, words
from scenario import Runner, exactly_once_violations, output_sequences

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(300)]

SEED = int(os.environ.get("HOTSTATE_CHAOS_SEED", "23"))
PARTITIONS = 4


def test_kill_9_under_exactly_once_across_a_repartition_is_exact(kafka, tmp_state_dir, tmp_path):
    rng = random.Random(SEED)
    source = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-orders")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-rk-counts")
    app_id = kafka.app_id("chaos-rk")
    vocab = words(2000)
    truth: Counter = Counter()
    produced = 0

    def produce(n: int) -> None:
        nonlocal produced
        recs = [(f"order-{produced + i}", rng.choice(vocab)) for i in range(n)]
        kafka.produce(source, recs, partitions=PARTITIONS)
        truth.update(w for _, w in recs)
        produced += n

    stderr = tmp_path / "runner.stderr"
    args = ["--rekey"]
    runner = Runner(kafka, app_id, tmp_state_dir, source, sink, stderr, "exactly_once_v2", args)
    try:
        runner.wait_event("running", timeout_s=60)
        produce(3000)
        runner.wait_event("offsets", timeout_s=60)  # it has committed: past start-up, busy with the backlog
        kill_at = time.monotonic() + rng.uniform(0.0, 0.5)
        while time.monotonic() < kill_at:
            produce(300)
            time.sleep(0.01)
        runner.kill()
    finally:
        runner.close_files()
    produce(1000)  # while it is down
    runner = Runner(kafka, app_id, tmp_state_dir, source, sink, stderr, "exactly_once_v2", args)
    try:
        runner.wait_event("running", timeout_s=90)
        produce(500)
        wait_for(lambda: {w: seq[-1] for w, seq in output_sequences(kafka, sink).items()} == dict(truth),
                 "exact counts in the output (read_committed)", 120, 0.5)
        bad = exactly_once_violations(truth, output_sequences(kafka, sink))
        assert not bad, f"{len(bad)} words with doubled or missing updates: {dict(list(bad.items())[:5])}"
        runner.terminate()
    finally:
        runner.close_files()
