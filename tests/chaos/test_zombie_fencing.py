"""A zombie cannot commit: an exactly-once instance frozen (SIGSTOP) past its session timeout loses its
tasks to another instance; when it resumes (SIGCONT) it must notice, commit nothing for those tasks, keep
their committed state on disk, and rejoin. Input flows the whole time; at the end the output topic
(read_committed) holds exactly the true counts: nothing lost, nothing doubled."""
from __future__ import annotations

import random
import signal
import time

import pytest

from kafka_helpers import wait_for, words
from scenario import PARTITIONS, Feeder, Runner, owned, exactly_once_violations, output_sequences

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(300)]



def test_sigstopped_zombie_commits_nothing_and_rejoins(kafka, tmp_path):
    rng = random.Random(5)
    source = kafka.create_topic(partitions=PARTITIONS, prefix="zombie-words")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="zombie-counts")
    app_id = kafka.app_id("zombie")
    feeder = Feeder(kafka, source, rng, words(3000), 200)
    dir_a, dir_b = tmp_path / "a", tmp_path / "b"
    a = Runner(kafka, app_id, dir_a, source, sink, tmp_path / "a.stderr", "exactly_once_v2")
    b = Runner(kafka, app_id, dir_b, source, sink, tmp_path / "b.stderr", "exactly_once_v2")
    try:
        feeder.start()
        wait_for(lambda: owned(a) and owned(b) and owned(a) | owned(b) == set(range(PARTITIONS)),
                 "both instances to run tasks", 90, 0.1)
        zombie_tasks = owned(a)
        a.proc.send_signal(signal.SIGSTOP)  # frozen mid-work, past its 6 s session timeout
        wait_for(lambda: owned(b) == set(range(PARTITIONS)), "the other instance to take every task", 60, 0.1)
        # Resume at once: the zombie's transaction (opened before the freeze) is still open, younger than
        # transaction_timeout_ms (10 s), and holds output of tasks that now belong to b.
        resumed_at = len(a.events)
        a.proc.send_signal(signal.SIGCONT)
        a_log = tmp_path / "a.stderr"
        wait_for(lambda: "partitions lost" in a_log.read_text() or "transaction failed" in a_log.read_text(),
                 "the resumed zombie to notice it lost its tasks", 60, 0.2)
        wait_for(lambda: owned(a, resumed_at) and owned(a, resumed_at) | owned(b) == set(range(PARTITIONS)),
                 "the zombie to rejoin and run tasks again (a report after it resumed)", 90, 0.2)
        time.sleep(1)
        expected = feeder.stop()
        assert not feeder.errors, feeder.errors
        ends = kafka.ends(source)
        wait_for(lambda: kafka.committed(app_id, source, PARTITIONS) == ends, "every input offset committed", 60, 0.2)
        out = kafka.read_table(sink)
        wrong = {w: (out.get(w), c) for w, c in expected.items() if out.get(w) != c}
        assert not wrong, f"{len(wrong)} words wrong in the output (got, true): {dict(list(wrong.items())[:10])}"
        # No zombie write became visible: each word's output values are exactly 1, 2, ..., n.
        bad = exactly_once_violations(expected, output_sequences(kafka, sink))
        assert not bad, f"{len(bad)} words with doubled or missing updates: {dict(list(bad.items())[:5])}"
        # The zombie's tasks kept their committed state on disk (closed, not wiped).
        for p in zombie_tasks:
            store_dir = dir_a / app_id / f"0_{p}" / "word-counts"
            assert store_dir.is_dir() and any(store_dir.iterdir()), f"the zombie's store of task 0_{p} was wiped"
    finally:
        feeder.stop()
        for r in (a, b):
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGCONT)
            r.close_files()
