"""Exactly-once with a table under kill -9: orders keyed by an order id are re-keyed by their word, joined with a
table of allowed words (app.table: its source topic is its changelog) and counted. After a kill at a random moment
while it processes and commits (and the table is being updated), and a restart on the same state dir, the table's
store is at the committed offset (restored from its source topic up to it if needed) and every allowed word's
output is exactly 1, 2, ..., n: no update lost, none doubled; words outside the table are never counted."""
from __future__ import annotations

import os
import random
import time
from collections import Counter

import pytest

from hotstate.kafka.partitioner import partition_for as murmur2_partition
from kafka_helpers import wait_for, words
from scenario import Runner, exactly_once_violations, output_sequences

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(300)]

SEED = int(os.environ.get("HOTSTATE_CHAOS_SEED", "31"))
PARTITIONS = 4


def test_kill_9_under_exactly_once_with_a_table_join_is_exact(kafka, tmp_state_dir, tmp_path):
    rng = random.Random(SEED)
    source = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-tb-orders")
    table = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-tb-allowed")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-tb-counts")
    app_id = kafka.app_id("chaos-tb")
    vocab = words(1000)
    allowed = set(rng.sample(vocab, 600))
    by_partition: dict[int, list] = {}
    for w in sorted(allowed):  # as a Java producer partitions them: where the re-keyed orders go
        by_partition.setdefault(murmur2_partition(w.encode(), PARTITIONS), []).append((w.encode(), b"1"))
    for p, recs in by_partition.items():
        kafka.produce_to(table, p, recs)
    truth: Counter = Counter()
    produced = 0

    def update_table(n: int) -> None:
        """New values for allowed words: the table's store has uncommitted writes when the kill comes (lost with
        the process: the restart processes those records again from the committed offset, or restores them from
        the source topic if the kill fell between the commit and the store write); the set of allowed words stays
        the same."""
        for w in rng.sample(sorted(allowed), n):
            kafka.produce_to(table, murmur2_partition(w.encode(), PARTITIONS), [(w.encode(), str(produced).encode())])

    def produce(n: int) -> None:
        nonlocal produced
        recs = [(f"order-{produced + i}", rng.choice(vocab)) for i in range(n)]
        kafka.produce(source, recs, partitions=PARTITIONS)
        truth.update(w for _, w in recs if w in allowed)
        produced += n

    stderr = tmp_path / "runner.stderr"
    args = ["--table", table]
    runner = Runner(kafka, app_id, tmp_state_dir, source, sink, stderr, "exactly_once_v2", args)
    try:
        runner.wait_event("running", timeout_s=60)
        wait_for(lambda: kafka.committed(app_id, table, PARTITIONS) == kafka.ends(table), "the table loaded", 60)
        produce(3000)
        runner.wait_event("offsets", timeout_s=60)  # it has committed: busy with the backlog
        kill_at = time.monotonic() + rng.uniform(0.0, 0.5)
        while time.monotonic() < kill_at:
            produce(300)
            update_table(50)
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
                 "exact counts of the allowed words in the output (read_committed)", 120, 0.5)
        bad = exactly_once_violations(truth, output_sequences(kafka, sink))
        assert not bad, f"{len(bad)} words with doubled or missing updates: {dict(list(bad.items())[:5])}"
        runner.terminate()
    finally:
        runner.close_files()
    assert not [t for t in kafka.admin.list_topics(timeout=10).topics if t.startswith(app_id) and "allowed" in t]
