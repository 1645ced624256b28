"""Restore by download (issue #9) on the real broker, against a file:// store and a real S3 server (moto):
a word-count app builds state and a changelog; its stores are checkpointed and published with the
``Snapshotter`` at their changelog offsets (independent of the upload wiring); more records are written (the
tail); then an app with an EMPTY state dir and ``snapshot_store`` set downloads the snapshot, replays only
the tail, and ends with exactly the counts a full changelog replay gives. Damaged snapshots, no snapshot and
fresh-enough local state are covered too."""
from __future__ import annotations

import logging
import shutil
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from hotstate.snapshot import (ObjectStore, Outcome, PartitionPaths, Restorer, SnapshotRequest, Snapshotter,
                               take_checkpoint)
from hotstate.state.rocksdb_store import RocksDBBackend
import hotstate
from hotstate.observe.prometheus import MetricsServer
from kafka_helpers import (RecordingListener, RestoreEvent, WordCount, build_word_count, wait_for, wait_processed,
                           wait_store_offsets_at_end)

_SNAPSHOT_TESTS = str(Path(__file__).resolve().parents[1] / "snapshot")
if _SNAPSHOT_TESTS not in sys.path:
    sys.path.insert(0, _SNAPSHOT_TESTS)

from snapshot_support import corrupt  # noqa: E402
from snapshot_store_helpers import free_port  # noqa: E402

pytestmark = pytest.mark.integration

PARTITIONS = 2
STORE = "word-counts"


class SnapshotListener(RecordingListener):
    def __init__(self) -> None:
        super().__init__()
        self.downloads: list[tuple[int, str, int, int, float, str]] = []
        self._dl_lock = threading.Lock()

    def on_snapshot_downloaded(self, partition, store_name, snapshot_offset, num_bytes, seconds):  # noqa: ANN001
        with self._dl_lock:
            self.downloads.append((partition.partition, store_name, snapshot_offset, num_bytes, seconds,
                                   threading.current_thread().name))
        self._add(RestoreEvent("download", partition.topic, partition.partition, store_name, snapshot_offset))

    def downloaded(self) -> dict[int, int]:
        """partition -> snapshot offset; at most one download per partition is expected."""
        out: dict[int, int] = {}
        for p, _, offset, _, _, _ in self.downloads:
            assert p not in out, f"two snapshots downloaded for partition {p}: {self.downloads}"
            out[p] = offset
        return out


def publish(wc: WordCount, objects: ObjectStore, tmp_path: Path, tag: str) -> dict[int, int]:
    """Checkpoints each task's word-count store (the app is closed) and publishes it at the store's changelog
    offset; returns partition -> that offset."""
    offsets = {}
    s = Snapshotter(objects, wc.app_id, instance_id=f"test-{tag}")
    s.start()
    try:
        for p in range(PARTITIONS):
            backend = RocksDBBackend(STORE, str(wc.state_dir / wc.app_id / f"0_{p}" / STORE))
            try:
                offset = backend.changelog_offset()
                cp = take_checkpoint(backend._db, tmp_path / f"cp-{tag}-{p}").path
            finally:
                backend.close()
            assert offset is not None and offset > 0
            s.submit(SnapshotRequest(STORE, f"0_{p}", wc.changelog, p, offset, 1, cp))
            offsets[p] = offset
        assert s.wait_idle(60), "the uploader did not finish"
        results = s.drain_results()
    finally:
        s.close()
    assert [r.outcome for r in results] == [Outcome.PUBLISHED] * PARTITIONS, results
    return offsets


def snapshot_config(store_url, **extra) -> dict:
    url, options = store_url
    return {"snapshot_store": url, "snapshot_store_options": options, **extra}


def empty_state_dir(wc: WordCount, tmp_path: Path, name: str) -> None:
    d = tmp_path / name
    d.mkdir()
    wc.state_dir = d


def test_cold_restore_downloads_the_snapshot_and_replays_only_the_tail(kafka, tmp_state_dir, tmp_path, store_url,
                                                                       objects):
    wc = WordCount(kafka, tmp_state_dir, seed=11, partitions=PARTITIONS)
    wc.produce(3000)
    wc.run()
    snap = publish(wc, objects, tmp_path, "a")
    assert snap == kafka.ends(wc.changelog)
    _, _, ends, _ = wc.run(produce_while_running=300)  # the tail, written after the snapshot
    assert all(ends[p] > snap[p] for p in range(PARTITIONS)), (snap, ends)

    empty_state_dir(wc, tmp_path, "cold")
    listener = SnapshotListener()
    app, _, ends2, restored = wc.run(listener, **snapshot_config(store_url))  # run() checks every count
    assert ends2 == ends
    assert listener.downloaded() == snap
    assert {d[5] for d in listener.downloads} == {"hotstate-state-updater"}
    for p in range(PARTITIONS):  # per partition: the download, then the tail's restore
        kinds = [e.kind for e in listener.events if e.partition == p and e.kind != "batch"]
        assert kinds == ["download", "start", "end"], listener.events
    assert listener.starts() == {p: (snap[p], ends[p]) for p in range(PARTITIONS)}
    assert listener.totals() == {p: ends[p] - snap[p] for p in range(PARTITIONS)}
    assert restored == {f"0_{p}": {STORE: ends[p] - snap[p]} for p in range(PARTITIONS)}
    # Downloads are counted, and came before the tail's restore started.
    m = app.metrics()
    assert m["restore_download_bytes_total"] == sum(d[3] for d in listener.downloads) > 0
    assert m["restore_records_total"] == sum(ends[p] - snap[p] for p in range(PARTITIONS))
    server = MetricsServer(wc.app_id, app.metrics, 0, host="127.0.0.1")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    finally:
        server.close()
    downloaded = float(m["restore_download_bytes_total"])
    assert f'hotstate_restore_download_bytes_total{{app_id="{wc.app_id}"}} {downloaded}' in text
    assert f'hotstate_restore_download_rate{{app_id="{wc.app_id}"}}' in text
    # The staging directory is on the state dir's filesystem and left empty.
    staging = wc.state_dir / wc.app_id / ".snapshot-staging"
    assert staging.is_dir() and not any(staging.iterdir())
    # The store equals a full replay of the changelog (read_committed).
    assert kafka.read_table(wc.changelog) == dict(wc.expected)


def test_a_bit_flipped_sst_falls_back_to_the_older_snapshot_then_to_the_changelog(kafka, tmp_state_dir, tmp_path,
                                                                                  store_url, objects, caplog):
    wc = WordCount(kafka, tmp_state_dir, seed=12, partitions=PARTITIONS)
    wc.produce(2000)
    wc.run()
    older = publish(wc, objects, tmp_path, "a")
    wc.run(produce_while_running=1000)
    newer = publish(wc, objects, tmp_path, "b")
    _, _, ends, _ = wc.run(produce_while_running=200)
    assert all(older[p] < newer[p] < ends[p] for p in range(PARTITIONS))

    # Partition 0: flip a bit of an SST that only the newer snapshot has -> the older one is used.
    # Partition 1: flip a bit of an SST both have -> neither is used, the full changelog is replayed.
    def manifests(p):
        listing = Restorer(objects, wc.app_id).catalog.list_partition(PartitionPaths(wc.app_id, STORE, p))
        return [ref.manifest for ref in listing.readable]

    new0, old0 = manifests(0)
    only_new = [f for f in new0.files if f.name.endswith(".sst") and f.object not in {g.object for g in old0.files}]
    assert only_new, "the newer snapshot of partition 0 has no SST of its own"
    corrupt(objects, only_new[0].object, "flip")
    new1, old1 = manifests(1)
    shared = [f for f in new1.files if f.name.endswith(".sst") and f.object in {g.object for g in old1.files}]
    assert shared, "the snapshots of partition 1 share no SST"
    corrupt(objects, shared[0].object, "flip")

    empty_state_dir(wc, tmp_path, "cold")
    listener = SnapshotListener()
    with caplog.at_level(logging.WARNING, logger="hotstate"):
        app, _, ends2, _ = wc.run(listener, **snapshot_config(store_url))  # run() checks every count
    assert ends2 == ends
    assert listener.downloaded() == {0: older[0]}, listener.downloads
    assert listener.starts() == {0: (older[0], ends[0]), 1: (0, ends[1])}
    text = caplog.text
    assert "unusable" in text and "altered" in text
    assert "no usable snapshot of word-counts[1]" in text
    assert kafka.read_table(wc.changelog) == dict(wc.expected)


def test_no_snapshot_replays_the_whole_changelog(kafka, tmp_state_dir, tmp_path, store_url):
    wc = WordCount(kafka, tmp_state_dir, seed=13, partitions=PARTITIONS)
    wc.produce(2000)
    _, _, ends, _ = wc.run()
    empty_state_dir(wc, tmp_path, "cold")
    # What a process that died mid-download left in the staging directory is removed at start.
    leftover = wc.state_dir / wc.app_id / ".snapshot-staging" / ".snapshot-word-counts-0-dead" / "000009.sst"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"partial")
    listener = SnapshotListener()
    app, _, _, _ = wc.run(listener, **snapshot_config(store_url))
    assert listener.downloads == []
    assert listener.starts() == {p: (0, ends[p]) for p in range(PARTITIONS)}
    assert app.metrics()["restore_download_bytes_total"] == 0
    assert not leftover.parent.exists()


@pytest.mark.parametrize("lag,downloads", [(1_000_000, False), (10, True)])
def test_local_state_within_the_recovery_lag_is_not_replaced(kafka, tmp_state_dir, tmp_path, store_url, objects,
                                                             lag, downloads):
    wc = WordCount(kafka, tmp_state_dir, seed=14, partitions=PARTITIONS)
    wc.produce(2000)
    wc.run()
    local = kafka.ends(wc.changelog)
    aside = tmp_path / "state-copy"
    shutil.copytree(tmp_state_dir, aside)
    wc.run(produce_while_running=1000)
    snap = publish(wc, objects, tmp_path, "a")
    assert all(snap[p] - local[p] > 10 for p in range(PARTITIONS))

    # The old local state is behind the snapshot by less than (lag 1e6) or more than (lag 10) the lag.
    shutil.rmtree(tmp_state_dir)
    shutil.copytree(aside, tmp_state_dir)
    listener = SnapshotListener()
    app, _, ends, _ = wc.run(listener, acceptable_recovery_lag=lag, **snapshot_config(store_url))
    if downloads:
        assert listener.downloaded() == snap
        assert listener.starts() == {p: (snap[p], ends[p]) for p in range(PARTITIONS) if snap[p] < ends[p]}
    else:
        assert listener.downloads == []
        assert app.metrics()["restore_download_bytes_total"] == 0
        assert listener.starts() == {p: (local[p], ends[p]) for p in range(PARTITIONS)}


def test_an_unreachable_store_at_start_falls_back_to_the_changelog(kafka, tmp_state_dir, tmp_path, caplog):
    wc = WordCount(kafka, tmp_state_dir, seed=15, partitions=PARTITIONS)
    wc.produce(1000)
    _, _, ends, _ = wc.run()
    empty_state_dir(wc, tmp_path, "cold")
    listener = SnapshotListener()
    nobody = {"endpoint": f"http://127.0.0.1:{free_port()}", "region": "us-east-1", "allow_http": True}
    with caplog.at_level(logging.WARNING, logger="hotstate"):
        wc.run(listener, snapshot_store="s3://nowhere/prefix", snapshot_store_options=nobody)
    assert listener.downloads == []
    assert listener.starts() == {p: (0, ends[p]) for p in range(PARTITIONS)}
    assert "restoring from the changelog" in caplog.text


class StandbyEvents(hotstate.StandbyUpdateListener):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: list[tuple[int, int]] = []

    def on_update_start(self, partition, store_name, starting_offset):  # noqa: ANN001
        with self.lock:
            self.starts.append((partition.partition, starting_offset))

    def on_batch_loaded(self, *args):  # noqa: ANN002
        pass

    def on_update_suspended(self, *args):  # noqa: ANN002
        pass


@pytest.mark.timeout(180)
def test_a_standby_starting_from_nothing_bootstraps_from_the_snapshot(kafka, tmp_state_dir, tmp_path):
    url, options = f"file://{tmp_path / 'snapshots'}", {}
    objects = ObjectStore.open(url, options)
    wc = WordCount(kafka, tmp_state_dir, seed=16, partitions=PARTITIONS)
    wc.produce(2000)
    wc.run()
    snap = publish(wc, objects, tmp_path, "a")
    _, _, ends, _ = wc.run(produce_while_running=200)

    common = dict(num_standby_replicas=1, session_timeout_ms=6000, snapshot_store=url, snapshot_store_options=options)
    a = wc.app(**common)
    restore_b, standby_b = SnapshotListener(), StandbyEvents()
    b = build_word_count(kafka.bootstrap, wc.app_id, tmp_path / "b", wc.source, wc.sink, listener=restore_b,
                         **common, commit_interval_ms=100)
    b.set_standby_listener(standby_b)
    a.start()
    try:
        a.wait_until_running(timeout_s=60)
        b.start()
        # b has no state: its standby (a warm-up) of a task of a's starts from the snapshot, not from offset 0.
        wait_for(lambda: standby_b.starts, "b to start a standby", 60)
        p, offset = standby_b.starts[0]
        assert offset == snap[p], (standby_b.starts, snap)
        assert b.metrics()["restore_download_bytes_total"] > 0
        # A task b got as active from nothing downloaded too (the listener hears actives only).
        assert restore_b.downloaded() == {q: snap[q] for q in restore_b.downloaded()}
        assert p not in restore_b.downloaded()

        def standby_offset() -> int | None:
            return next((t.stores[STORE].changelog_offset for t in b.tasks()
                         if t.standby and t.stores[STORE].changelog.partition == p), None)

        # It then tails the changelog to its end (the tail written after the snapshot).
        wait_for(lambda: standby_offset() == ends[p] or p in {int(t.id[2:]) for t in b.tasks() if not t.standby},
                 "b's standby store to reach the changelog end (or to become active)", 60, detail=standby_offset)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_an_app_restores_from_the_snapshots_another_instance_published(kafka, tmp_state_dir, tmp_path, store_url,
                                                                      objects, guarantee):
    """End to end, no snapshot published by hand: a running app publishes snapshots of its stores (the upload
    side), then an instance on an empty disk restores by downloading the newest one and replaying only the
    changelog written after it (the download side); its counts are exact and its store equals the changelog."""
    wc = WordCount(kafka, tmp_state_dir, seed=14, partitions=PARTITIONS)
    wc.produce(3000)
    config = snapshot_config(store_url, snapshot_interval_ms=200, processing_guarantee=guarantee)
    app = wc.app(**config)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, wc.produced)
        wc.check_store(app)
        markers = 1 if guarantee == "exactly_once_v2" else 0
        stored = {p: end - markers for p, end in
                  wait_store_offsets_at_end(kafka, app, wc.store, wc.changelog, markers=markers,
                                            source=wc.source).items()}

        def published() -> dict[int, int]:
            out = {}
            for p in range(PARTITIONS):
                listing = Restorer(objects, wc.app_id).catalog.list_partition(PartitionPaths(wc.app_id, STORE, p))
                if listing.readable:
                    out[p] = listing.readable[0].manifest.changelog_offset
            return out

        # Each partition's newest snapshot holds the store at its offset now (no input is pending).
        wait_for(lambda: published() == stored, "a snapshot of each store at its offset", 60, 0.2,
                 detail=lambda: (published(), stored))
    finally:
        assert app.close(timeout_s=30)
    wc.all_committed()
    snap = published()
    _, _, tail_ends, _ = wc.run(produce_while_running=300)  # more input, snapshots off (at-least-once): the tail
    assert all(tail_ends[p] > snap[p] for p in range(PARTITIONS)), (snap, tail_ends)

    empty_state_dir(wc, tmp_path, "cold")
    listener = SnapshotListener()
    _, _, ends2, restored = wc.run(listener, **snapshot_config(store_url))
    assert ends2 == tail_ends
    assert listener.downloaded() == snap
    # Only the tail's records are replayed (under exactly-once the snapshot's offset is followed by the
    # commit marker of its transaction, which holds no record).
    assert restored == {f"0_{p}": {STORE: tail_ends[p] - snap[p] - markers} for p in range(PARTITIONS)}
    assert kafka.read_table(wc.changelog) == dict(wc.expected)
