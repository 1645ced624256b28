"""Garbage collection: keeps ``retain`` manifests per store partition, deletes what no kept manifest
references, and never deletes an object a live manifest references or one a writer may be about to
publish (the grace rule of docs/formats.md). Clocks are injected; the store is file:// and S3."""
from __future__ import annotations

import pytest

from hotstate.snapshot import Catalog, GarbageCollector, Outcome, PartitionPaths, Snapshotter
from snapshot_support import checkpoint, open_db, request, write_keys

APP = "app"
GRACE = 100.0
VALID = 10.0
PATHS = PartitionPaths(APP, "counts", 0)


class Clocks:
    """A monotonic clock and a wall clock the test moves; the wall clock starts at real time (the object
    store stamps objects with its own real clock)."""

    def __init__(self):
        import time

        self.mono = 1000.0
        self.wall = time.time()

    def monotonic(self):
        return self.mono

    def time(self):
        return self.wall

    def advance(self, s):
        self.mono += s
        self.wall += s


@pytest.fixture
def clocks():
    return Clocks()


def _writer(objects, clocks, retain=2):
    s = Snapshotter(objects, APP, instance_id="w", retain=retain, gc_grace_s=GRACE, listing_valid_s=VALID,
                    clock=clocks.monotonic, wall_clock=clocks.time)
    s.start()
    return s


def _ship(s, req):
    s.submit(req)
    assert s.wait_idle(60)
    [r] = s.drain_results()
    assert r.outcome is Outcome.PUBLISHED, r
    return r


def _state(objects):
    listing = Catalog(objects).list_partition(PATHS)
    return listing, {m.offset for m in listing.manifests}, set(listing.files)


def test_keeps_retain_manifests_and_deletes_unreferenced_objects_after_the_grace(objects, clocks, tmp_path):
    db = open_db(tmp_path / "db")
    s = _writer(objects, clocks, retain=2)
    try:
        for i in range(4):
            write_keys(db, 0, 3000, tag=b"r%d" % i)  # rewrites every key: compaction drops the old SSTs
            db.flush()
            db.compact_range(None, None)
            _ship(s, request(checkpoint(db, tmp_path, f"cp{i}"), offset=100 * (i + 1)))
            clocks.advance(1)
        listing, offsets, files = _state(objects)
        assert offsets == {300, 400}, "the newest two manifests are kept"
        referenced = listing.referenced
        assert referenced <= files, "every object a kept manifest references exists"
        garbage = files - referenced
        assert garbage, "old snapshots' objects are still there: within the grace"
        held_by_300 = {f.object for m in listing.readable if m.offset == 300 for f in m.manifest.files}

        # Still unreferenced after the grace (by both clocks): the next snapshot's GC deletes them.
        clocks.advance(GRACE + 1)
        write_keys(db, 0, 10, tag=b"late")
        _ship(s, request(checkpoint(db, tmp_path, "cp-late"), offset=500))
        listing, offsets, files = _state(objects)
        assert offsets == {400, 500}
        assert not (garbage & files), "the old garbage is gone"
        # What remains unreferenced is only what manifest 300 (deleted just now) held: in its grace.
        assert listing.referenced <= files
        assert files - listing.referenced <= held_by_300
    finally:
        s.close()
        db.close()


def test_an_object_a_writer_just_uploaded_is_not_deleted(objects, clocks, tmp_path):
    """The race of the issue: a writer uploads X, a GC sees X unreferenced, the writer publishes a manifest
    naming X. X is young (and newly seen unreferenced): the GC keeps it through the grace."""
    db = open_db(tmp_path / "db")
    s = _writer(objects, clocks, retain=1)
    try:
        write_keys(db, 0, 1000)
        _ship(s, request(checkpoint(db, tmp_path, "cp0"), offset=100))
        # Another writer's upload in flight: an object no manifest names yet.
        in_flight = PATHS.file_object("000099.sst", "a" * 64)
        objects.put_bytes(in_flight, b"sst bytes of a snapshot about to be published")
        gc = GarbageCollector(objects, retain=1, grace_s=GRACE, listing_valid_s=VALID, clock=clocks.monotonic,
                              wall_clock=clocks.time)
        catalog = Catalog(objects, clock=clocks.monotonic)
        for _ in range(3):  # watching for most of the grace is not enough
            clocks.advance(GRACE / 4)
            listing = catalog.list_partition(PATHS)
            result = gc.collect(listing, epoch=1)
            assert in_flight not in result.objects_deleted
        assert objects.head(in_flight) is not None
        # Unreferenced through a whole grace, and old: deleted.
        clocks.advance(GRACE)
        listing = catalog.list_partition(PATHS)
        assert gc.collect(listing, epoch=1).objects_deleted == (in_flight,)
    finally:
        s.close()
        db.close()


def test_an_old_object_stays_for_a_grace_after_its_last_manifest_goes(objects, clocks, tmp_path):
    """A writer may reuse an object a listed manifest references (no upload). If that manifest is then
    deleted, the object must outlive the writer's publish: the GC starts counting at the deletion."""
    db = open_db(tmp_path / "db")
    s = _writer(objects, clocks, retain=1)
    try:
        write_keys(db, 0, 2000)
        r0 = _ship(s, request(checkpoint(db, tmp_path, "cp0"), offset=100))
        first = {f.object for f in Catalog(objects).list_partition(PATHS).readable[0].manifest.files}
        clocks.advance(10 * GRACE)  # the objects are old now
        write_keys(db, 0, 2000, tag=b"z")
        db.flush()
        db.compact_range(None, None)
        _ship(s, request(checkpoint(db, tmp_path, "cp1"), offset=200))  # retain=1: manifest 100 is deleted
        listing, offsets, files = _state(objects)
        assert offsets == {200}
        dropped = first - listing.referenced
        assert dropped and dropped <= files, "objects of the deleted manifest stay (old, but newly unreferenced)"
        clocks.advance(GRACE / 2)
        _ship(s, request(checkpoint(db, tmp_path, "cp2"), offset=300))
        assert dropped <= _state(objects)[2]
        assert r0.outcome is Outcome.PUBLISHED
    finally:
        s.close()
        db.close()


def test_a_stale_epoch_or_an_unknown_manifest_version_deletes_nothing(objects, clocks, tmp_path):
    db = open_db(tmp_path / "db")
    s = _writer(objects, clocks, retain=1)
    try:
        write_keys(db, 0, 1000)
        _ship(s, request(checkpoint(db, tmp_path, "cp0"), offset=100, epoch=4))
        junk = PATHS.file_object("000001.sst", "b" * 64)
        objects.put_bytes(junk, b"junk")
        gc = GarbageCollector(objects, retain=1, grace_s=GRACE, listing_valid_s=VALID, clock=clocks.monotonic,
                              wall_clock=clocks.time)
        catalog = Catalog(objects, clock=clocks.monotonic)

        def collect(epoch):
            listing = catalog.list_partition(PATHS)
            return gc.collect(listing, epoch=epoch)

        collect(4)
        clocks.advance(2 * GRACE)
        stale = collect(3)
        assert stale.skipped and "fenced" in stale.skipped and not stale.objects_deleted
        objects.create(PATHS.manifest_name(9, 1), b'{"format_version": 2}')
        blocked = collect(9)
        assert blocked.skipped and "unknown format version" in blocked.skipped
        assert objects.head(junk) is not None
    finally:
        s.close()
        db.close()
