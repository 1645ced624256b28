"""A zombie publishes no snapshot of a task it lost. Instance A is frozen (SIGSTOP) past its session timeout
while its snapshot uploader is busy (every upload slowed, so a snapshot is in flight and the next queued);
instance B takes every task and publishes them at its newer epoch; then A resumes (SIGCONT). A's uploader
goes on with what it had, and must publish nothing at its old epoch: it is fenced by B's manifests (or the
snapshot is cancelled once A's stream thread learns that the tasks are gone). S3 (moto_server)."""
from __future__ import annotations

import json
import random
import re
import signal
import time
from pathlib import Path

import pytest

from hotstate.snapshot import ObjectStore
from kafka_helpers import wait_for, words
from scenario import PARTITIONS, STORE, Feeder, Runner, owned
from snapshot_store_helpers import BUCKET, check_manifests_whole

pytestmark = [pytest.mark.integration, pytest.mark.chaos, pytest.mark.timeout(300)]



def by_writer(objects, app_id: str) -> dict[int, list[tuple[int, int, int]]]:
    """partition -> [(epoch, offset, writer pid)] of its manifests."""
    return {p: [(m.epoch, m.offset, m.manifest.writer.pid) for m in listing.manifests]
            for p, listing in check_manifests_whole(objects, app_id, STORE, PARTITIONS).items()}


def test_a_frozen_zombie_publishes_no_snapshot_of_the_tasks_it_lost(kafka, tmp_path, moto):
    url, options = f"s3://{BUCKET}/zombie-{time.time_ns()}", moto.options()
    objects = ObjectStore.open(url, options)
    source = kafka.create_topic(partitions=PARTITIONS, prefix="snapzombie-words")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="snapzombie-counts")
    app_id = kafka.app_id("snapzombie")
    args = ["--snapshot-store", url, "--snapshot-options", json.dumps(options), "--snapshot-interval-ms", "200"]
    feeder = Feeder(kafka, source, random.Random(9), words(3000), 200)
    a = Runner(kafka, app_id, tmp_path / "a", source, sink, tmp_path / "a.stderr",
               extra_args=[*args, "--snapshot-put-delay-ms", "300"])
    b = Runner(kafka, app_id, tmp_path / "b", source, sink, tmp_path / "b.stderr", extra_args=args)
    try:
        feeder.start()
        wait_for(lambda: owned(a) and owned(b) and owned(a) | owned(b) == set(range(PARTITIONS)),
                 "both instances to run tasks", 90, 0.1)
        lost = owned(a)
        wait_for(lambda: all(any(pid == a.proc.pid for _, _, pid in by_writer(objects, app_id)[p]) for p in lost),
                 "the zombie-to-be to publish its tasks", 60, 0.2)
        a.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.5)  # a request already sent lands now
        before = by_writer(objects, app_id)
        a_epoch = {p: max(e for e, _, pid in before[p] if pid == a.proc.pid) for p in lost}

        # B owns every task and published each of A's former ones at a newer epoch.
        wait_for(lambda: owned(b) == set(range(PARTITIONS)), "the other instance to take every task", 60, 0.1)
        wait_for(lambda: all(any(pid == b.proc.pid and e > a_epoch[p] for e, _, pid in by_writer(objects, app_id)[p])
                             for p in lost), "the new owner to publish the zombie's former tasks", 60, 0.2)
        a_log = Path(tmp_path / "a.stderr")
        log_at_resume = len(a_log.read_text())
        a.proc.send_signal(signal.SIGCONT)
        wait_for(lambda: "partitions lost" in a_log.read_text() or "rejoined the group as a new member" in a_log.read_text(),
                 "the resumed zombie to notice it lost its tasks", 60, 0.2)

        # It held snapshots of those tasks when it froze, and drops them: fenced by the new owner's epoch, or
        # cancelled when its stream thread closed the tasks.
        def dropped() -> set[int]:
            since_resume = a_log.read_text()[log_at_resume:]
            return {p for p in lost if re.search(
                rf"snapshot of {STORE}\[{p}\] at offset \d+ (is not published|dropped: the task left)", since_resume)}

        wait_for(lambda: bool(dropped()), "the zombie to drop the snapshots it held (none in flight: nothing tested)",
                 30, 0.2)
        time.sleep(2)  # its uploader had time to go on with whatever else it held
        after = by_writer(objects, app_id)
        for p in lost:
            old_before = {m for m in before[p] if m[2] == a.proc.pid and m[0] <= a_epoch[p]}
            old_after = {m for m in after[p] if m[2] == a.proc.pid and m[0] <= a_epoch[p]}
            assert old_after <= old_before, (f"partition {p}: the zombie published {sorted(old_after - old_before)} "
                                             f"at its old epoch {a_epoch[p]} after it lost the task")
        feeder.stop()
        assert not feeder.errors, feeder.errors
    finally:
        feeder.stop()
        for r in (a, b):
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGCONT)
            r.close_files()
