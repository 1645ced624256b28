"""Ownership-based fencing on file:// and S3: the uploader claims a task's epoch from the group generation at
which the instance got it (on its own thread), a stale owner never raises its epoch above a newer owner's,
``forget`` stops what a task that left still had queued or in flight, and a writer that stalled between its
fence-checking listing and its publish lists again (and so sees a newer owner) before it publishes."""
from __future__ import annotations

import threading
import time

import pytest

from hotstate.snapshot import (Catalog, ObjectStore, OwnershipLost, Outcome, Ownership, PartitionPaths,
                               SnapshotRequest, Snapshotter, claim_epoch)
from snapshot_support import checkpoint, open_db, write_keys

APP = "app"
PATHS = PartitionPaths(APP, "counts", 0)


@pytest.fixture
def db(tmp_path):
    db = open_db(tmp_path / "db")
    write_keys(db, 0, 1000)
    yield db
    db.close()


def owned(cp, offset: int, generation: int, since_s: float) -> SnapshotRequest:
    return SnapshotRequest("counts", "0_0", "app-counts-changelog", 0, offset, None, cp,
                           Ownership(generation, since_s))


def ship(s: Snapshotter, req: SnapshotRequest):
    s.submit(req)
    assert s.wait_idle(60)
    [result] = s.drain_results()
    return result


def names(objects) -> list[str]:
    return [o.name.rsplit("/", 1)[1] for o in objects.list(PATHS.manifests)]


def test_claim_epoch_refuses_to_raise_above_a_manifest_created_during_the_ownership(objects, db, tmp_path):
    catalog = Catalog(objects)
    before = time.time()
    time.sleep(0.01)
    s = Snapshotter(objects, APP, instance_id="other")
    s.start()
    assert ship(s, SnapshotRequest("counts", "0_0", "t", 0, 100, 7, checkpoint(db, tmp_path, "a"))).outcome is Outcome.PUBLISHED
    s.close()
    # Generations restarted (the group was deleted): epoch 7 was published before this ownership began.
    assert claim_epoch(catalog, PATHS, 2, owned_since_s=time.time()) == 8
    assert claim_epoch(catalog, PATHS, 7, owned_since_s=time.time()) == 8  # a static member back at its generation
    # Epoch 7 was published after this ownership (generation 2) began: a newer owner has the task.
    with pytest.raises(OwnershipLost, match="epoch 7"):
        claim_epoch(catalog, PATHS, 2, owned_since_s=before)
    assert claim_epoch(catalog, PATHS, 9, owned_since_s=before) == 9  # older epochs never fence a newer owner


def test_the_uploader_claims_the_epoch_of_an_ownership_once_on_its_thread(objects, db, tmp_path):
    s = Snapshotter(objects, APP, instance_id="owner")
    s.start()
    since = time.time()
    first = ship(s, owned(checkpoint(db, tmp_path, "a"), 100, generation=4, since_s=since))
    assert (first.outcome, first.request.epoch) == (Outcome.PUBLISHED, 4)
    write_keys(db, 1000, 10)
    assert ship(s, owned(checkpoint(db, tmp_path, "b"), 200, 4, since)).request.epoch == 4
    assert names(objects) == ["0000000004-00000000000000000100.json", "0000000004-00000000000000000200.json"]
    s.close()


def test_a_stale_owner_publishes_nothing_once_a_newer_owner_published(objects, db, tmp_path):
    zombie_since = time.time()
    time.sleep(0.01)
    owner = Snapshotter(objects, APP, instance_id="owner")
    owner.start()
    assert ship(owner, owned(checkpoint(db, tmp_path, "a"), 100, generation=6, since_s=time.time())).outcome is Outcome.PUBLISHED
    # The zombie (it got the task at generation 3, before the owner) claims only now: it must not rise above 6.
    zombie = Snapshotter(objects, APP, instance_id="zombie")
    zombie.start()
    write_keys(db, 1000, 10)
    result = ship(zombie, owned(checkpoint(db, tmp_path, "b"), 500, generation=3, since_s=zombie_since))
    assert result.outcome is Outcome.FENCED
    assert names(objects) == ["0000000006-00000000000000000100.json"]
    assert zombie.metrics.snapshots_fenced_total == 1
    # ... and every later snapshot of that ownership is fenced too, without claiming again.
    assert ship(zombie, owned(checkpoint(db, tmp_path, "c"), 600, 3, zombie_since)).outcome is Outcome.FENCED
    assert names(objects) == ["0000000006-00000000000000000100.json"]
    owner.close(), zombie.close()


def test_a_request_needs_either_an_epoch_or_an_ownership(objects, db, tmp_path):
    s = Snapshotter(objects, APP)
    cp = checkpoint(db, tmp_path, "a")
    with pytest.raises(ValueError, match="either an epoch or an ownership"):
        s.submit(SnapshotRequest("counts", "0_0", "t", 0, 1, None, cp))
    with pytest.raises(ValueError, match="either an epoch or an ownership"):
        s.submit(SnapshotRequest("counts", "0_0", "t", 0, 1, 3, cp, Ownership(3, 0.0)))
    s.close()


class _HeldStore(ObjectStore):
    """Holds every file upload until ``release`` is set (``held`` is set once one waits)."""

    held = threading.Event()
    release = threading.Event()

    def put_file(self, name, path):
        self.held.set()
        assert self.release.wait(30)
        return super().put_file(name, path)


def test_forget_drops_the_queued_checkpoint_and_the_one_in_flight_publishes_nothing(store_url, db, tmp_path):
    url, options = store_url
    _HeldStore.held.clear(), _HeldStore.release.clear()
    objects = _HeldStore.open(url, options)
    s = Snapshotter(objects, APP)
    s.start()
    in_flight, queued = checkpoint(db, tmp_path, "a"), None
    s.submit(owned(in_flight, 100, 2, time.time()))
    assert _HeldStore.held.wait(30), "the upload started"
    write_keys(db, 1000, 10)
    queued = checkpoint(db, tmp_path, "b")
    s.submit(owned(queued, 200, 2, time.time()))
    s.forget("counts", 0)  # the task left this instance
    assert not queued.exists()
    _HeldStore.release.set()
    assert s.wait_idle(60)
    outcomes = sorted((r.request.changelog_offset, r.outcome) for r in s.drain_results())
    assert outcomes == [(100, Outcome.CANCELLED), (200, Outcome.CANCELLED)]
    assert names(objects) == []
    assert not in_flight.exists()
    # The partition comes back (a new ownership): it is shipped again.
    write_keys(db, 2000, 10)
    assert ship(s, owned(checkpoint(db, tmp_path, "c"), 300, 5, time.time())).outcome is Outcome.PUBLISHED
    s.close()


class _StallingStore(ObjectStore):
    """Simulates a process stopped right after the listing that checked the fence (SIGSTOP past its session):
    after the first listing that finds every file uploaded, the test clock jumps and a newer owner publishes."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.now = 1000.0
        self.stall: tuple[Snapshotter, SnapshotRequest] | None = None
        self.lists = 0

    def clock(self) -> float:
        return self.now

    def list(self, prefix):
        found = super().list(prefix)
        self.lists += 1
        if self.stall is not None and any("/files/" in o.name for o in found):
            newer, req = self.stall
            self.stall = None
            self.now += 30  # stopped for 30 s: longer than publish_within_s
            assert ship(newer, req).outcome is Outcome.PUBLISHED
        return found


def test_a_writer_stalled_after_its_fence_check_lists_again_and_publishes_nothing(store_url, db, tmp_path):
    url, options = store_url
    objects = _StallingStore.open(url, options)
    zombie = Snapshotter(objects, APP, instance_id="zombie", publish_within_s=10, clock=objects.clock)
    owner = Snapshotter(ObjectStore.open(url, options), APP, instance_id="owner")
    zombie.start(), owner.start()
    write_keys(db, 1000, 10)
    objects.stall = (owner, SnapshotRequest("counts", "0_0", "t", 0, 150, 6, checkpoint(db, tmp_path, "owner")))
    result = ship(zombie, SnapshotRequest("counts", "0_0", "t", 0, 400, 5, checkpoint(db, tmp_path, "zombie")))
    assert result.outcome is Outcome.FENCED, result
    assert names(objects) == ["0000000006-00000000000000000150.json"]
    zombie.close(), owner.close()


def test_without_a_stall_the_same_writer_publishes(store_url, db, tmp_path):
    """The control of the test above: the same path publishes when the listing stays fresh."""
    url, options = store_url
    objects = _StallingStore.open(url, options)
    writer = Snapshotter(objects, APP, publish_within_s=10, clock=objects.clock)
    writer.start()
    assert ship(writer, SnapshotRequest("counts", "0_0", "t", 0, 400, 5, checkpoint(db, tmp_path, "a"))).outcome is Outcome.PUBLISHED
    writer.close()
