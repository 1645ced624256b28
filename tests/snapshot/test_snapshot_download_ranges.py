"""Restorer's download concurrency: large files come from an object server as ranges fetched in parallel, never
more GETs in flight than ``concurrency``, and the file put together is the one the manifest names (sha256),
whether written with O_DIRECT or through the page cache."""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
import time

import pytest

from hotstate.snapshot import Outcome, PartitionPaths, Restorer, Snapshotter
from snapshot_support import checkpoint, contents, open_db, request, write_keys

APP = "app"


class CountingStore:
    """An ObjectStore that counts the GETs of data files (whole or ranged) and how many were in flight at once;
    each one takes at least ``delay_s`` so that overlapping calls do overlap."""

    def __init__(self, inner, delay_s: float = 0.02):
        self._inner = inner
        self._delay_s = delay_s
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.ranges: list[tuple[str, int, int]] = []
        self.whole: list[str] = []

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        time.sleep(self._delay_s)

    def _exit(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def download(self, name, dest, on_chunk=None):
        self._enter()
        try:
            self.whole.append(name)
            return self._inner.download(name, dest, on_chunk)
        finally:
            self._exit()

    def read_into(self, name, buffer, start, end, whole=False, on_chunk=None):
        self._enter()
        try:
            if whole:
                self.whole.append(name)
            else:
                self.ranges.append((name, start, end))
            return self._inner.read_into(name, buffer, start, end, whole, on_chunk)
        finally:
            self._exit()


@pytest.fixture
def published(objects, tmp_path):
    """A snapshot at offset 100 of 20,000 keys (SST files of a few hundred KB); returns its contents."""
    db = open_db(tmp_path / "db")
    try:
        write_keys(db, 0, 20_000)
        expected = contents(db)
        s = Snapshotter(objects, APP, instance_id="test-writer")
        s.start()
        try:
            s.submit(request(checkpoint(db, tmp_path, "cp"), offset=100))
            assert s.wait_idle(60)
            assert [r.outcome for r in s.drain_results()] == [Outcome.PUBLISHED]
        finally:
            s.close()
    finally:
        db.close()
    return expected


@pytest.mark.parametrize("direct_io", [True, False])
@pytest.mark.parametrize("concurrency", [1, 3])
def test_large_files_come_as_parallel_ranges_within_the_concurrency(objects, published, tmp_path, concurrency,
                                                                    direct_io):
    store = CountingStore(objects)
    part = 64 * 1024
    restorer = Restorer(store, APP, concurrency=concurrency, part_bytes=part, direct_io=direct_io)
    [manifest] = [ref.manifest for ref in restorer.catalog.list_partition(PartitionPaths(APP, "counts", 0)).readable]
    large = {f.object: f.size for f in manifest.files if f.size > part}
    assert large, "the test needs files larger than a range"

    fetched = restorer.fetch("counts", 0, None, tmp_path / "restored")
    assert fetched is not None and fetched.offset == 100
    assert store.max_in_flight <= concurrency
    if objects.supports_ranges:
        assert store.max_in_flight == concurrency, "the GETs ran in parallel"
        by_object: dict[str, list[tuple[int, int]]] = {}
        for name, start, end in store.ranges:
            by_object.setdefault(name, []).append((start, end))
        assert set(by_object) == set(large), "exactly the files larger than a range came as ranges"
        for name, size in large.items():
            assert sorted(by_object[name]) == [(s, min(s + part, size)) for s in range(0, size, part)]
        assert sorted(store.whole) == sorted(f.object for f in manifest.files if f.size <= part)
    else:  # file://: every file is copied whole by the kernel
        assert not store.ranges and sorted(store.whole) == sorted(f.object for f in manifest.files)
    restored = open_db(fetched.path)
    try:
        assert contents(restored) == published
    finally:
        restored.close()


class SlowFirstRange(CountingStore):
    """The first range of every ranged file arrives last: the later ranges wait for it before they are hashed."""

    def read_into(self, name, buffer, start, end, whole=False, on_chunk=None):
        if start == 0 and not whole:
            time.sleep(0.2)
        return super().read_into(name, buffer, start, end, whole, on_chunk)


@pytest.mark.parametrize("store_url", ["s3"], indirect=True)  # file:// stores copy whole files: no ranges
@pytest.mark.parametrize("direct_io", [True, False])
def test_files_on_disk_are_the_manifests_bytes_whatever_order_the_ranges_arrive(objects, published, tmp_path,
                                                                              direct_io):
    """The sha256 is computed over the bytes as they arrive (never read back): this checks what was written, byte
    for byte, sizes not a multiple of the O_DIRECT alignment included, with ranges arriving out of order."""
    assert objects.supports_ranges
    part = 12 * 1024  # a multiple of 4096, smaller than the SST files: several ranges each
    restorer = Restorer(SlowFirstRange(objects, delay_s=0), APP, concurrency=4, part_bytes=part, direct_io=direct_io)
    [manifest] = [ref.manifest for ref in restorer.catalog.list_partition(PartitionPaths(APP, "counts", 0)).readable]
    assert any(f.size % 4096 for f in manifest.files if f.size > part), "the test needs an unaligned ranged file"
    fetched = restorer.fetch("counts", 0, None, tmp_path / "restored")
    assert fetched is not None
    on_disk = {p.name: p.read_bytes() for p in fetched.path.iterdir()}
    assert sorted(on_disk) == sorted(f.name for f in manifest.files)
    for f in manifest.files:
        assert len(on_disk[f.name]) == f.size and hashlib.sha256(on_disk[f.name]).hexdigest() == f.sha256, f.name
    restored = open_db(fetched.path)
    try:
        assert contents(restored) == published
    finally:
        restored.close()


@pytest.mark.parametrize("store_url", ["s3"], indirect=True)  # file:// stores copy whole files: no ranges
def test_a_file_system_refusing_o_direct_writes_gets_the_files_through_the_page_cache(objects, published, tmp_path,
                                                                                     monkeypatch):
    """Some file systems accept O_DIRECT at open and refuse the writes (EINVAL): the file is then written without."""
    assert objects.supports_ranges
    real_pwrite, refused = os.pwrite, []

    def pwrite(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    restorer = Restorer(objects, APP, concurrency=3, part_bytes=12 * 1024, direct_io=True)
    fetched = restorer.fetch("counts", 0, None, tmp_path / "restored")
    assert fetched is not None and refused, "O_DIRECT was tried and refused"
    [manifest] = [ref.manifest for ref in restorer.catalog.list_partition(PartitionPaths(APP, "counts", 0)).readable]
    for f in manifest.files:
        data = (fetched.path / f.name).read_bytes()
        assert len(data) == f.size and hashlib.sha256(data).hexdigest() == f.sha256, f.name
