"""kill -9 of an at-least-once word-count app loses no update, and a restart replays only the changelog tail.

The app runs in a subprocess (alos_runner.py). Input is produced in rounds; the app is SIGKILLed at
seeded-random moments while it processes and commits, then restarted on the same state dir. At the end
every word's count (store and output topic) is >= its true count, and each restart restored from no lower
than the last in-store offset the killed process had reported (never the whole changelog unless the
store held nothing)."""
from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import hotstate
from kafka_helpers import (RecordingListener, build_word_count, true_counts, wait_for, word_records, words)

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(240)]

log = logging.getLogger("tests.chaos")

RUNNER = Path(__file__).with_name("alos_runner.py")
PARTITIONS = 4
STORE = "word-counts"
KILLS = 5
SEED = int(os.environ.get("HOTSTATE_CHAOS_SEED", "4"))


class Runner:
    """One run of alos_runner.py; its stdout events are collected by a reader thread."""

    def __init__(self, kafka, app_id, state_dir, source, sink, stderr_path: Path):
        self.stderr = open(stderr_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, str(RUNNER), "--bootstrap", kafka.bootstrap, "--app-id", app_id,
             "--state-dir", str(state_dir), "--source", source, "--sink", sink],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, bufsize=1)
        self.events: list[dict] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(ev)
                self._cond.notify_all()

    def wait_event(self, kind: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                found = [e for e in self.events if e["ev"] == kind]
                if found:
                    return found[0]
                if self.proc.poll() is not None:
                    raise AssertionError(f"the runner exited ({self.proc.returncode}) before {kind!r}; "
                                         f"see {self.stderr.name}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no {kind!r} event from the runner within {timeout_s}s; see {self.stderr.name}")
                self._cond.wait(min(left, 0.2))

    def of(self, kind: str) -> list[dict]:
        with self._cond:
            return [e for e in self.events if e["ev"] == kind]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(timeout=30) == -signal.SIGKILL
        self._reader.join(10)

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=60)
        self._reader.join(10)
        assert rc == 0, f"the runner exited with {rc} after SIGTERM; see {self.stderr.name}"

    def durable_offsets(self) -> dict[int, int]:
        """The highest in-store offset per partition the process reported while RUNNING: a lower bound
        of what its store holds on disk after a kill -9."""
        best: dict[int, int] = {}
        for e in self.events:
            if e["ev"] in ("running", "offsets"):
                for p, off in e["offsets"].items():
                    if off is not None:
                        best[int(p)] = max(best.get(int(p), 0), off)
        return best

    def close_files(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
        self.stderr.close()


def test_kill_9_loses_no_update_and_restarts_replay_only_the_tail(kafka, tmp_state_dir, tmp_path):
    rng = random.Random(SEED)
    log.warning("chaos seed %d (set HOTSTATE_CHAOS_SEED to repeat)", SEED)
    source = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-words")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="chaos-counts")
    app_id = kafka.app_id("chaos-wc")
    changelog = kafka.changelog(app_id, STORE)
    vocab = words(20000)
    truth: Counter = Counter()
    produced = 0
    stderr_path = tmp_path / "runner.stderr"
    report = []
    previous: Runner | None = None

    def produce_chunk(n: int) -> None:
        nonlocal produced
        recs = word_records(rng, vocab, n)
        kafka.produce(source, recs, partitions=PARTITIONS)
        truth.update(true_counts(recs))
        produced += len(recs)

    def produce_and_kill(runner: Runner) -> None:
        """Give the app a backlog; once it has committed in this run, keep feeding it and SIGKILL it between
        two chunks at a random moment: it is then busy processing and committing (thousands of distinct
        words per commit)."""
        produce_chunk(rng.randint(2000, 4000))
        runner.wait_event("offsets", timeout_s=30)  # its first commit: it is past start-up
        kill_at = time.monotonic() + rng.uniform(0.0, 0.5)
        while True:
            produce_chunk(rng.randint(300, 800))
            if time.monotonic() >= kill_at:
                break
            time.sleep(0.01)
        runner.kill()

    try:
        for run in range(KILLS + 1):
            marks_before = kafka.watermarks(changelog) if run else {}
            runner = Runner(kafka, app_id, tmp_state_dir, source, sink, stderr_path)
            try:
                runner.wait_event("running", timeout_s=60)
                # What this start restored, against what the killed process had durably stored.
                if previous is not None:
                    bound = previous.durable_offsets()
                    for e in runner.of("restore_start"):
                        p = e["partition"]
                        low, high = marks_before[p]
                        line = (f"run {run} partition {p}: replayed [{e['start']}, {e['end']}) = "
                                f"{e['end'] - e['start']} of {high - low} changelog records "
                                f"(killed process had stored up to {bound.get(p)})")
                        report.append(line)
                        log.warning(line)
                        assert e["end"] == high
                        assert e["start"] >= bound.get(p, low), f"restore below the durable store offset: {line}"
                    ends = {e["partition"]: e["total"] for e in runner.of("restore_end")}
                    starts = {e["partition"]: e["end"] - e["start"] for e in runner.of("restore_start")}
                    assert ends == starts, (ends, starts)
                    if not runner.of("restore_start"):
                        report.append(f"run {run}: nothing to restore")
                if run < KILLS:
                    produce_and_kill(runner)
                else:
                    produce_chunk(1000)
                    ends = kafka.ends(source)
                    wait_for(lambda: kafka.committed(app_id, source, PARTITIONS) == ends,
                             "the app to commit every input offset", 60, 0.2)
                    runner.terminate()
            finally:
                runner.close_files()
            previous = runner

        # No update lost: every count >= the truth (duplicates allowed under at-least-once).
        out = kafka.read_table(sink)
        lost = {w: (out.get(w), c) for w, c in truth.items() if (out.get(w) or 0) < c}
        assert not lost, f"{len(lost)} words lost updates in the output (got, true): {dict(list(lost.items())[:10])}"
        assert set(out) == set(truth)

        # The store, after the graceful close of the last run: nothing to restore, same counts as the output.
        listener = RecordingListener()
        app = build_word_count(kafka.bootstrap, app_id, tmp_state_dir, source, sink, listener=listener)
        app.start()
        try:
            app.wait_until_running(timeout_s=60)
            assert listener.of("start") == [], f"restore after a graceful close: {listener.events}"
            store = app.store(STORE)
            counts = {w: store.get(w) for w in truth}
        finally:
            assert app.close()
        lost = {w: (counts[w], c) for w, c in truth.items() if (counts[w] or 0) < c}
        assert not lost, f"{len(lost)} words lost updates in the store (got, true): {dict(list(lost.items())[:10])}"
        assert counts == out, "the store and the latest output per word disagree"
        dup = sum(counts.values()) - sum(truth.values())
        log.warning("chaos: %d records in %d runs, %d duplicate counts; %s", produced, KILLS + 1, dup, report)
        assert app.state is hotstate.AppState.NOT_RUNNING
    finally:
        sys.stderr.write(f"runner log: {stderr_path}\n" + "\n".join(report) + "\n")
