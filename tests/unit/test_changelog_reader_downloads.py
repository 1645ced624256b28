"""The changelog reader's snapshot downloads: the active store partitions started together download at once, at
most ``SNAPSHOT_DOWNLOAD_PARTITIONS_MAX`` at a time, each adopted (or not) on the reader's thread, and one that
fails or has no snapshot falls back to reading its changelog without disturbing the others."""
from __future__ import annotations

import logging
import threading

from hotstate.records import TopicPartition
from hotstate.runtime.changelog_reader import ChangelogReader
from hotstate.runtime.snapshot_download import SnapshotFetched
from test_changelog_reader import checkpoint_of, make_updater, replay
from test_state_updater import CHANGELOG, FakeRestoreConsumer, changelog_records, make_task, run_until_idle

PARTITIONS = 6  # more than SNAPSHOT_DOWNLOAD_PARTITIONS_MAX (4)


def tp(partition: int) -> TopicPartition:
    return TopicPartition(CHANGELOG.topic, partition)


class OverlappingSource:
    """A snapshot source whose fetches wait until ``expect`` of them are in flight (or ``wait_s`` passed), and
    that records how many ever were at once. ``outcome(partition)``: an offset to hand out, None (no snapshot)
    or an exception to raise."""

    def __init__(self, fill, outcome, expect: int, wait_s: float = 5.0):
        self.fill, self.outcome, self.expect, self.wait_s = fill, outcome, expect, wait_s
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self.enough = threading.Event()
        self.threads: set[str] = set()

    def fetch(self, store_name, changelog_partition, local_offset, into):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.threads.add(threading.current_thread().name)
            if self.in_flight >= self.expect:
                self.enough.set()
        try:
            self.enough.wait(self.wait_s)
            result = self.outcome(changelog_partition.partition)
            if isinstance(result, BaseException):
                raise result
            if result is None:
                return None
            self.fill(into)
            return SnapshotFetched(result, 100, 0.1)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_the_partitions_started_together_download_at_once_within_the_bound(tmp_path, closing):
    records = changelog_records(10)
    tasks = [make_task("rocksdb", tmp_path, partition=p) for p in range(PARTITIONS)]
    closing.extend(tasks)
    limit = ChangelogReader.SNAPSHOT_DOWNLOAD_PARTITIONS_MAX
    source = OverlappingSource(checkpoint_of(tmp_path, records[:6], 6), lambda p: 6, expect=limit)
    consumer = FakeRestoreConsumer({tp(p): (0, 10) for p in range(PARTITIONS)},
                                   {tp(p): records for p in range(PARTITIONS)})
    staging = tmp_path / "staging"
    staging.mkdir()
    u = make_updater(consumer, source=source, staging=staging)
    u._reader.start_actives(tasks)
    assert source.max_in_flight == limit, "the downloads ran at once, never more than the bound"
    assert all(name.startswith("hotstate-snapshot-download") for name in source.threads)
    assert consumer.positions == {tp(p): 6 for p in range(PARTITIONS)}  # every snapshot adopted
    run_until_idle(u, consumer)
    assert {t.id for t in u.drain_restored()} == {t.id for t in tasks}
    for task in tasks:
        backend = task.stores["counts"].backend
        assert backend.changelog_offset() == 10 and dict(backend.range(None, None)) == replay(records)
    assert list(staging.iterdir()) == []
    u._reader.close()


def test_a_failing_or_missing_snapshot_falls_back_alone(tmp_path, closing, caplog):
    records = changelog_records(10)
    tasks = [make_task("rocksdb", tmp_path, partition=p) for p in range(3)]
    closing.extend(tasks)
    outcomes = {0: OSError("unreachable"), 1: None, 2: 6}
    source = OverlappingSource(checkpoint_of(tmp_path, records[:6], 6), outcomes.get, expect=3)
    consumer = FakeRestoreConsumer({tp(p): (0, 10) for p in range(3)}, {tp(p): records for p in range(3)})
    staging = tmp_path / "staging"
    staging.mkdir()
    u = make_updater(consumer, source=source, staging=staging)
    with caplog.at_level(logging.WARNING):
        u._reader.start_actives(tasks)
    assert source.max_in_flight == 3
    assert consumer.positions == {tp(0): 0, tp(1): 0, tp(2): 6}
    assert any("fetching a snapshot failed" in r.getMessage() and "unreachable" in r.getMessage()
               for r in caplog.records)
    run_until_idle(u, consumer)
    assert {t.id for t in u.drain_restored()} == {t.id for t in tasks} and u.drain_failed() == []
    for task in tasks:
        assert dict(task.stores["counts"].backend.range(None, None)) == replay(records)
    assert list(staging.iterdir()) == []
    u._reader.close()


def test_a_discarded_download_is_cancelled_or_deletes_its_files_once_it_ends(tmp_path):
    from concurrent.futures import Future

    from hotstate.runtime.snapshot_download import Download as _Download

    waiting, running = tmp_path / "waiting", tmp_path / "running"
    for d in (waiting, running):
        d.mkdir()
        (d / "000001.sst").write_bytes(b"x")
    queued = Future()
    _Download(str(waiting), queued).discard()
    assert queued.cancelled() and not waiting.exists()
    started = Future()
    assert started.set_running_or_notify_cancel()
    _Download(str(running), started).discard()
    assert running.exists(), "a fetch still writing keeps its directory until it ends"
    started.set_result(None)
    assert not running.exists()
