"""The uploader's queue (file:// store): one pending checkpoint per store partition, the newer replaces the
older, close drops what is queued, an unusable checkpoint is dropped without stopping the thread; every
checkpoint directory handed over is deleted in the end."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from rocksdict import Options, Rdict

from hotstate.snapshot import ObjectStore, Outcome, SnapshotRequest, Snapshotter, take_checkpoint


def _db(tmp_path: Path) -> Rdict:
    db = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    for i in range(500):
        db[b"k%d" % i] = b"v%d" % i
    return db


def _req(cp: Path, offset: int, partition: int = 0) -> SnapshotRequest:
    return SnapshotRequest("counts", f"0_{partition}", "app-counts-changelog", partition, offset, 1, cp)


def test_a_newer_checkpoint_replaces_a_queued_one(tmp_path):
    db = _db(tmp_path)
    s = Snapshotter(ObjectStore.open(f"file://{tmp_path}/store"), "app")
    a = take_checkpoint(db, tmp_path / "a").path
    b = take_checkpoint(db, tmp_path / "b").path
    other = take_checkpoint(db, tmp_path / "other").path
    s.submit(_req(a, 10))
    s.submit(_req(other, 10, partition=1))
    s.submit(_req(b, 20))
    assert not a.exists() and b.exists()
    assert [(r.request.checkpoint_dir, r.outcome) for r in s.drain_results()] == [(a, Outcome.REPLACED)]
    s.start()
    assert s.wait_idle(30)
    published = {(r.request.changelog_partition, r.request.changelog_offset): r.outcome for r in s.drain_results()}
    assert published == {(0, 20): Outcome.PUBLISHED, (1, 10): Outcome.PUBLISHED}
    s.close()
    db.close()
    assert not b.exists() and not other.exists()


def test_close_drops_queued_checkpoints_and_later_submits(tmp_path):
    db = _db(tmp_path)
    s = Snapshotter(ObjectStore.open(f"file://{tmp_path}/store"), "app")  # never started: all stay queued
    a = take_checkpoint(db, tmp_path / "a").path
    s.submit(_req(a, 10))
    started = time.monotonic()
    s.close()
    assert time.monotonic() - started < 1
    late = take_checkpoint(db, tmp_path / "late").path
    s.submit(_req(late, 20))
    assert not a.exists() and not late.exists()
    assert [r.outcome for r in s.drain_results()] == [Outcome.FAILED, Outcome.FAILED]
    db.close()


def test_an_unusable_checkpoint_is_dropped_and_the_thread_goes_on(tmp_path, caplog):
    db = _db(tmp_path)
    s = Snapshotter(ObjectStore.open(f"file://{tmp_path}/store"), "app")
    s.start()
    gone = take_checkpoint(db, tmp_path / "gone").path
    shutil.rmtree(gone)
    s.submit(_req(gone, 10))
    assert s.wait_idle(30)
    [dropped] = s.drain_results()
    assert dropped.outcome is Outcome.FAILED and "cannot be read" in caplog.text
    s.submit(_req(take_checkpoint(db, tmp_path / "ok").path, 20))
    assert s.wait_idle(30)
    assert [r.outcome for r in s.drain_results()] == [Outcome.PUBLISHED]
    s.close()
    db.close()


def test_a_partition_whose_checkpoint_is_replaced_again_and_again_keeps_its_place_in_the_queue(tmp_path):
    """Partitions are shipped oldest-waiting first. A newer checkpoint replacing a queued one keeps the place
    of the first: otherwise a partition submitted after the others at every commit waits for ever while they
    keep getting replaced (seen on the real broker: two partitions went unshipped for 20 s)."""
    db = _db(tmp_path)
    s = Snapshotter(ObjectStore.open(f"file://{tmp_path}/store"), "app")  # started below: all queued first
    s.submit(_req(take_checkpoint(db, tmp_path / "p0-a").path, 10, partition=0))
    s.submit(_req(take_checkpoint(db, tmp_path / "p1-a").path, 10, partition=1))
    s.submit(_req(take_checkpoint(db, tmp_path / "p0-b").path, 20, partition=0))  # the next commit: p0 again
    s.start()
    assert s.wait_idle(30)
    shipped = [(r.request.changelog_partition, r.request.changelog_offset) for r in s.drain_results()
               if r.outcome is Outcome.PUBLISHED]
    assert shipped == [(0, 20), (1, 10)], "p0 has waited longest"
    s.close()
    db.close()
