"""Fencing on a file:// directory and on S3 (moto honours If-None-Match: *): a writer of an older epoch
publishes nothing, and two writers racing for one manifest name end with one manifest and a clean loser."""
from __future__ import annotations

import threading

import pytest

from hotstate.snapshot import ObjectExistsError, ObjectStore, Outcome, PartitionPaths, Snapshotter
from snapshot_support import checkpoint, open_db, request, write_keys

APP = "app"


def _ship(s, req):
    s.submit(req)
    assert s.wait_idle(60)
    [result] = s.drain_results()
    return result


def _manifests(objects):
    return [o.name for o in objects.list(PartitionPaths(APP, "counts", 0).manifests)]


def test_conditional_create_refuses_an_existing_name(objects):
    objects.create("x/manifest.json", b"first")
    with pytest.raises(ObjectExistsError):
        objects.create("x/manifest.json", b"second")
    assert objects.get_bytes("x/manifest.json") == b"first"


def test_conditional_create_has_one_winner_among_racing_writers(objects):
    results = []
    barrier = threading.Barrier(6)

    def race(i):
        barrier.wait()
        try:
            objects.create("race/m.json", b"%d" % i)
            results.append(("won", i))
        except ObjectExistsError:
            results.append(("lost", i))

    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    winners = [i for what, i in results if what == "won"]
    assert len(winners) == 1 and len(results) == 6
    assert objects.get_bytes("race/m.json") == b"%d" % winners[0]


def test_a_writer_of_an_older_epoch_publishes_nothing(objects, tmp_path):
    db = open_db(tmp_path / "db")
    try:
        write_keys(db, 0, 1000)
        old = Snapshotter(objects, APP, instance_id="zombie")
        new = Snapshotter(objects, APP, instance_id="owner")
        old.start(), new.start()
        assert _ship(old, request(checkpoint(db, tmp_path, "a"), offset=100, epoch=5)).outcome is Outcome.PUBLISHED
        assert _ship(new, request(checkpoint(db, tmp_path, "b"), offset=150, epoch=6)).outcome is Outcome.PUBLISHED
        before = _manifests(objects)
        write_keys(db, 1000, 1000)
        # The zombie's state is further along (offset 900) but its epoch is older: it publishes nothing, and
        # its GC deletes nothing.
        stale = _ship(old, request(checkpoint(db, tmp_path, "c"), offset=900, epoch=5))
        assert stale.outcome is Outcome.FENCED
        assert _manifests(objects) == before
        assert old.metrics.snapshots_fenced_total == 1
        # The owner goes on.
        assert _ship(new, request(checkpoint(db, tmp_path, "d"), offset=950, epoch=6)).outcome is Outcome.PUBLISHED
        # Same epoch, an offset not newer than the newest: nothing to publish.
        assert _ship(new, request(checkpoint(db, tmp_path, "e"), offset=950, epoch=6)).outcome is Outcome.UNCHANGED
        old.close(), new.close()
    finally:
        db.close()
    assert not list(tmp_path.glob("[a-e]")), "every checkpoint directory was deleted"


class _RacingStore(ObjectStore):
    """Holds every manifest create until both writers reached it: both listed before either published."""

    barrier = threading.Barrier(2, timeout=30)

    def create(self, name, data):
        if "/manifests/" in name:
            self.barrier.wait()
        return super().create(name, data)


def test_two_writers_of_one_name_one_wins_cleanly(store_url, tmp_path):
    url, options = store_url
    writers, dbs = [], []
    for i in range(2):
        objects = _RacingStore.open(url, options)
        db = open_db(tmp_path / f"db{i}")
        write_keys(db, 0, 2000, tag=b"w%d" % i)
        dbs.append(db)
        writers.append(Snapshotter(objects, APP, instance_id=f"w{i}"))
    for i, (w, db) in enumerate(zip(writers, dbs)):
        w.start()
        w.submit(request(checkpoint(db, tmp_path, f"cp{i}"), offset=500, epoch=3))
    assert all(w.wait_idle(60) for w in writers)
    outcomes = sorted(r.outcome.value for w in writers for r in w.drain_results())
    assert outcomes == ["PUBLISHED", "RACED"]
    assert _manifests(writers[0].objects) == [PartitionPaths(APP, "counts", 0).manifest_name(3, 500)]
    for w, db in zip(writers, dbs):
        w.close()
        db.close()


def test_claim_epoch_rises_above_the_newest_published_one(objects, tmp_path):
    from hotstate.snapshot import Catalog, claim_epoch

    paths = PartitionPaths(APP, "counts", 0)
    catalog = Catalog(objects)
    assert claim_epoch(catalog, paths, 3) == 3  # nothing published
    objects.create(paths.manifest_name(7, 100), b"{}")
    assert claim_epoch(catalog, paths, 9) == 9  # the generation is newer
    assert claim_epoch(catalog, paths, 2) == 8  # generations restarted: above the newest
    assert claim_epoch(catalog, paths, 7) == 8  # equal is not enough: a new owner must sort after
