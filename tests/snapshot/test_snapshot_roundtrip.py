"""Snapshot -> upload -> fetch -> open, on a file:// directory and on a real S3 server (moto): the data
comes back whole, the second snapshot uploads only new files, and a damaged, missing or unknown snapshot
is never used."""
from __future__ import annotations

import logging

import orjson
import pytest

from hotstate.snapshot import Outcome, PartitionPaths, Restorer, Snapshotter
from snapshot_support import checkpoint, contents, corrupt, open_db, request, write_keys

APP = "app"


def snapshotter(objects, **kw) -> Snapshotter:
    s = Snapshotter(objects, APP, instance_id="test-writer", **kw)
    s.start()
    return s


def ship(s: Snapshotter, req) -> list:
    s.submit(req)
    assert s.wait_idle(60), "the uploader did not finish"
    return s.drain_results()


@pytest.fixture
def db(tmp_path):
    d = open_db(tmp_path / "db")
    yield d
    d.close()


def test_round_trip_restores_the_checkpointed_state(objects, db, tmp_path):
    write_keys(db, 0, 20_000)
    db.flush()
    write_keys(db, 20_000, 5_000)  # still in the memtable: the checkpoint flushes it
    cp = checkpoint(db, tmp_path, "cp1")
    expected = contents(db)
    s = snapshotter(objects)
    try:
        [result] = ship(s, request(cp, offset=25_000))
    finally:
        s.close()
    assert result.outcome is Outcome.PUBLISHED and result.error is None
    assert not cp.exists(), "the uploader deletes its checkpoint when done"

    fetched = Restorer(objects, APP).fetch("counts", 0, None, tmp_path / "restored")
    assert fetched is not None
    assert (fetched.offset, fetched.path) == (25_000, tmp_path / "restored")
    assert fetched.num_bytes == sum(p.stat().st_size for p in fetched.path.iterdir())
    restored = open_db(fetched.path)
    try:
        assert contents(restored) == expected
    finally:
        restored.close()


def test_second_snapshot_uploads_only_new_files(objects, db, tmp_path):
    write_keys(db, 0, 20_000)
    cp1 = checkpoint(db, tmp_path, "cp1")
    first_files = {p.name: p.stat().st_size for p in cp1.iterdir()}
    s = snapshotter(objects)
    try:
        [r1] = ship(s, request(cp1, offset=100))
        write_keys(db, 20_000, 10_000)
        db.flush()
        cp2 = checkpoint(db, tmp_path, "cp2")
        second_files = {p.name: p.stat().st_size for p in cp2.iterdir()}
        [r2] = ship(s, request(cp2, offset=200))
    finally:
        s.close()
    assert (r1.outcome, r2.outcome) == (Outcome.PUBLISHED, Outcome.PUBLISHED)
    old_ssts = {n for n in first_files if n.endswith(".sst")}
    new_ssts = {n for n in second_files if n.endswith(".sst")} - old_ssts
    assert old_ssts and new_ssts and old_ssts <= set(second_files)
    # Every SST of the first snapshot is reused; the new SSTs and the changed small files are uploaded.
    assert r2.reused_files >= len(old_ssts)
    assert r2.uploaded_files == len(second_files) - r2.reused_files
    assert r2.uploaded_bytes < sum(second_files.values())
    assert r2.uploaded_bytes >= sum(second_files[n] for n in new_ssts)
    stored = objects.list(f"{APP}/counts/0/files/")
    assert len(stored) == r1.uploaded_files + r2.uploaded_files  # each object uploaded once
    assert s.metrics.snapshot()["snapshots"]["0_0/counts"]["snapshot_upload_bytes_total"] == \
        r1.uploaded_bytes + r2.uploaded_bytes


def _two_snapshots(objects, db, tmp_path):
    """Publishes offsets 100 and 200; returns (paths, files only in the newer, files in both)."""
    write_keys(db, 0, 10_000)
    s = snapshotter(objects)
    try:
        ship(s, request(checkpoint(db, tmp_path, "cp1"), offset=100))
        write_keys(db, 10_000, 10_000, tag=b"w")
        db.flush()
        ship(s, request(checkpoint(db, tmp_path, "cp2"), offset=200))
    finally:
        s.close()
    paths = PartitionPaths(APP, "counts", 0)
    listing = s.catalog.list_partition(paths)
    newer, older = (m.manifest for m in listing.readable)
    older_objects = {f.object for f in older.files}
    only_newer = [f.object for f in newer.files if f.object not in older_objects and f.is_sst]
    shared = [f.object for f in newer.files if f.object in older_objects and f.is_sst]
    return only_newer, shared


def _no_leftovers(tmp_path):
    assert not (tmp_path / "restored").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".restored")], "partial downloads left behind"


# part_bytes 4096: on S3 every SST file here is fetched as ranges (a truncated one: ranges past its end fail).
@pytest.mark.parametrize("part_bytes", [None, 4096])
@pytest.mark.parametrize("how", ["truncate", "bitflip"])
def test_damaged_object_falls_back_to_the_older_snapshot_then_to_none(objects, db, tmp_path, how, part_bytes,
                                                                      caplog):
    only_newer, shared = _two_snapshots(objects, db, tmp_path)
    assert only_newer and shared
    corrupt(objects, only_newer[0], how)
    restorer = Restorer(objects, APP, concurrency=2, part_bytes=part_bytes)
    with caplog.at_level(logging.WARNING, "hotstate.snapshot"):
        fetched = restorer.fetch("counts", 0, None, tmp_path / "restored")
    assert fetched is not None and fetched.offset == 100, "the older snapshot is used"
    assert "unusable" in caplog.text
    restored = open_db(fetched.path)
    try:
        assert restored[b"key-000000001"].startswith(b"v-")
        assert restored.get(b"key-000010001") is None
    finally:
        restored.close()

    corrupt(objects, shared[0], how)  # now both snapshots are damaged
    caplog.clear()
    with caplog.at_level(logging.WARNING, "hotstate.snapshot"):
        assert restorer.fetch("counts", 0, None, tmp_path / "again") is None
    assert "restoring from the changelog" in caplog.text
    assert not (tmp_path / "again").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".again")], "partial downloads left behind"


@pytest.mark.parametrize("part_bytes", [None, 4096])
def test_missing_object_falls_back(objects, db, tmp_path, part_bytes):
    only_newer, _ = _two_snapshots(objects, db, tmp_path)
    objects.delete(only_newer[0])
    fetched = Restorer(objects, APP, part_bytes=part_bytes).fetch("counts", 0, None, tmp_path / "restored")
    assert fetched is not None and fetched.offset == 100


def test_unknown_format_version_is_ignored_with_a_warning(objects, db, tmp_path, caplog):
    _two_snapshots(objects, db, tmp_path)
    paths = PartitionPaths(APP, "counts", 0)
    newest = objects.list(paths.manifests)[-1].name
    doc = orjson.loads(objects.get_bytes(newest))
    doc["format_version"] = 99
    future = paths.manifest_name(9, 300)
    objects.create(future, orjson.dumps(doc))
    with caplog.at_level(logging.WARNING, "hotstate.snapshot"):
        fetched = Restorer(objects, APP).fetch("counts", 0, None, tmp_path / "restored")
    assert fetched is not None and fetched.offset == 200
    assert "format_version 99" in caplog.text and future in caplog.text


def test_nothing_is_fetched_when_local_state_is_as_new(objects, db, tmp_path):
    _two_snapshots(objects, db, tmp_path)
    restorer = Restorer(objects, APP)
    assert restorer.fetch("counts", 0, 200, tmp_path / "restored") is None
    assert restorer.fetch("counts", 1, None, tmp_path / "restored") is None  # no snapshot of partition 1
    fetched = restorer.fetch("counts", 0, 150, tmp_path / "restored")
    assert fetched is not None and fetched.offset == 200
    assert restorer.metrics.restore_download_bytes_total == fetched.num_bytes


def test_a_manifest_that_lies_about_its_offset_is_skipped(objects, db, tmp_path, caplog):
    _two_snapshots(objects, db, tmp_path)
    paths = PartitionPaths(APP, "counts", 0)
    newest = objects.list(paths.manifests)[-1].name
    objects.create(paths.manifest_name(1, 999), objects.get_bytes(newest))  # says offset 200 inside
    with caplog.at_level(logging.WARNING, "hotstate.snapshot"):
        fetched = Restorer(objects, APP).fetch("counts", 0, None, tmp_path / "restored")
    assert fetched is not None and fetched.offset == 200
    assert "is not the one its name says" in caplog.text


def test_round_trip_of_a_hotstate_rocksdb_store_keeps_its_changelog_offset(objects, tmp_path):
    """The store as the runtime keeps it (data + the hotstate_meta column family with the changelog offset,
    atomic flush): a checkpoint taken after a commit restores to the same data and the same offset."""
    from hotstate.state.rocksdb_store import RocksDBBackend, read_stored_offset

    store = RocksDBBackend("counts", str(tmp_path / "store"))
    try:
        store.write([(b"k%d" % i, b"v%d" % i) for i in range(5000)], 5000)
        store.write([(b"k1", None), (b"k2", b"changed")], 5002)
        cp = checkpoint(store._db, tmp_path, "cp")
        assert read_stored_offset("counts", str(cp)) == 5002
        s = snapshotter(objects)
        try:
            [result] = ship(s, request(cp, offset=store.changelog_offset()))
        finally:
            s.close()
        assert result.outcome is Outcome.PUBLISHED
    finally:
        store.close()
    fetched = Restorer(objects, APP).fetch("counts", 0, None, tmp_path / "restored")
    assert fetched is not None and fetched.offset == 5002
    restored = RocksDBBackend("counts", str(fetched.path))
    try:
        assert restored.changelog_offset() == 5002
        assert restored.get(b"k1") is None and restored.get(b"k2") == b"changed" and restored.get(b"k4999") == b"v4999"
    finally:
        restored.close()
