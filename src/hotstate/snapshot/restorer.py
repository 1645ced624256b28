"""Fetch a store partition's newest usable snapshot into a local directory (the changelog reader's
DOWNLOADING state calls ``Restorer.fetch``; then it opens the files and replays the changelog tail from the
returned offset).

- Manifests are tried newest first (epoch, then offset); one of an unknown format is skipped (a warning).
- A snapshot no newer than the local state (``local_offset``) is not downloaded: None.
- Files download in parallel (``concurrency`` GETs at a time). From an object server every file comes as ranges
  of ``part_bytes`` (a file of one range: one plain GET), in parallel too: a store partition's snapshot is
  mostly one or two large SST files, and one GET stream is far slower than the server (docs/benchmarks.md,
  "Restore by download in bench/restore.py"). Each download thread reads a range into its own aligned buffer
  (reused; memory stays under ``concurrency`` x ``part_bytes`` whatever the sizes), writes it to the file, then
  hashes it in its turn (the ranges of a file in order), so the sha256 is computed from memory as the bytes
  arrive, in parallel across files, and no byte is read back from the disk.
- The files are written with O_DIRECT where the file system allows it (``direct_io``; Linux): on this
  benchmark machine (a VM) a buffered write of a fresh file cost about 3 CPU-s per GB in the kernel
  (``copy_folio_from_iter_atomic`` on newly allocated page cache: perf, docs/benchmarks.md), an O_DIRECT write
  0.05; the opened store then reads its blocks from the disk rather than from the page cache. A ``file://``
  store's objects are copied whole by the kernel (``ObjectStore.download``), then hashed from the copy.
- Every file's size and sha256 are checked against the manifest. A missing, truncated or altered object:
  a warning, and the next older manifest is tried; none left: None (the caller replays the changelog).
- Files land in a hidden sibling directory that is renamed to ``into`` only when all are verified: the
  target never holds a partial snapshot, and a failed try leaves nothing behind.
"""
from __future__ import annotations

import concurrent.futures
import errno
import fcntl
import hashlib
import logging
import mmap
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import SnapshotStoreError
from ..observe.metrics import SnapshotMetrics
from .catalog import Catalog, ManifestRef
from .manifest import FileEntry, Manifest, PartitionPaths
from .objects import ObjectMissingError, ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SnapshotFetched:
    """A verified snapshot in ``path``: the store's state up to changelog ``offset`` (the next offset to
    apply), ``num_bytes`` downloaded in ``seconds``."""

    offset: int
    num_bytes: int
    seconds: float
    path: Path


class _Unusable(Exception):
    """This snapshot cannot be used (an object missing, truncated or altered); an older one may be."""


_ALIGN = 4096  # O_DIRECT writes: buffer address, file offset and length multiples of this


class _Target:
    """A file fetched from an object server as ``parts`` ranges of ``part_bytes`` (one part: a plain GET): the
    open file they are written into and the sha256 over its bytes in order. Each range's worker keeps its bytes
    in its buffer, writes them, then waits for its turn (every earlier range hashed) and hashes them: no byte is
    read back from the file. The pool takes ranges in submission order, so the range a worker waits for has
    been started by another worker: no cycle. The worker that hashes the last range truncates the file to its
    size (an O_DIRECT write of the last range is padded to the alignment), closes it and compares the digest."""

    def __init__(self, entry: FileEntry, path: Path, parts: int, direct: bool):
        self.entry = entry
        self.path = path
        self.parts = parts
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        self.direct = False
        if direct:
            try:
                self.fd = os.open(path, flags | os.O_DIRECT, 0o644)
                self.direct = True
            except OSError:  # a file system without O_DIRECT (tmpfs): the page cache then
                self.fd = os.open(path, flags, 0o644)
        else:
            self.fd = os.open(path, flags, 0o644)
        self.digest = hashlib.sha256()
        self.hashed = 0  # ranges hashed so far, in order
        self.failed = False
        self._cond = threading.Condition()

    def write(self, buffer: memoryview, n: int, at: int) -> None:
        """Writes ``buffer[:n]`` at offset ``at``; O_DIRECT: padded to the alignment (past the file's end only
        for its last range: truncated by ``finish``); a file system that refuses an O_DIRECT write (EINVAL) gets
        this file through the page cache instead."""
        while True:
            length = (n + _ALIGN - 1) // _ALIGN * _ALIGN if self.direct else n
            view, pos = buffer[:length], at
            try:
                while view:
                    written = os.pwrite(self.fd, view, pos)
                    view, pos = view[written:], pos + written
                return
            except OSError as exc:
                if not self.direct or exc.errno != errno.EINVAL:
                    raise
                with self._cond:  # several ranges' workers may get here at once
                    if self.direct:
                        fcntl.fcntl(self.fd, fcntl.F_SETFL, fcntl.fcntl(self.fd, fcntl.F_GETFL) & ~os.O_DIRECT)
                        self.direct = False

    def wait_turn(self, index: int, stop: threading.Event) -> bool:
        """Until every range before ``index`` is hashed; False if the file or the fetch failed meanwhile."""
        with self._cond:
            while self.hashed < index and not self.failed and not stop.is_set():
                self._cond.wait(0.2)
            return self.hashed == index and not self.failed

    def hashed_one(self) -> bool:
        """One more range hashed; True for the last one."""
        with self._cond:
            self.hashed += 1
            self._cond.notify_all()
            return self.hashed == self.parts

    def fail(self) -> None:
        with self._cond:
            self.failed = True
            self._cond.notify_all()

    def finish(self) -> None:
        os.ftruncate(self.fd, self.entry.size)
        self.close()

    def close(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class _Buffers:
    """One aligned buffer (anonymous memory) per download thread, reused for every range it fetches."""

    def __init__(self, size: int):
        self.size = (size + _ALIGN - 1) // _ALIGN * _ALIGN
        self._local = threading.local()

    def get(self) -> memoryview:
        view = getattr(self._local, "view", None)
        if view is None:
            view = self._local.view = memoryview(mmap.mmap(-1, self.size))
        return view


class Restorer:
    PART_BYTES = 16 * 1024 * 1024  # ranges of a large file fetched in parallel (object servers only)

    def __init__(self, objects: ObjectStore, app_id: str, *, concurrency: int = 4,
                 metrics: SnapshotMetrics | None = None, catalog: Catalog | None = None,
                 clock: Callable[[], float] = time.monotonic, part_bytes: int | None = None,
                 direct_io: bool = True):
        """``concurrency``: GETs in flight at most (whole files or ranges); ``part_bytes``: the size of a range
        (``PART_BYTES`` by default); ``direct_io``: write downloaded files with O_DIRECT where the file system
        allows it (Linux; needs ``part_bytes`` a multiple of 4096), bypassing the page cache (see the module
        docstring)."""
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency} must be >= 1")
        self.part_bytes = self.PART_BYTES if part_bytes is None else part_bytes
        if self.part_bytes < 1:
            raise ValueError(f"part_bytes={self.part_bytes} must be >= 1")
        self.objects = objects
        self.direct_io = direct_io and hasattr(os, "O_DIRECT") and self.part_bytes % _ALIGN == 0
        self.app_id = app_id
        self.concurrency = concurrency
        self.metrics = metrics if metrics is not None else SnapshotMetrics()
        self.catalog = catalog if catalog is not None else Catalog(objects, clock=clock)
        self._clock = clock

    def fetch(self, store_name: str, changelog_partition: int, local_offset: int | None,
              into: Path) -> SnapshotFetched | None:
        """Downloads the newest usable snapshot newer than ``local_offset`` (None: no local state) into the
        directory ``into`` (absent or empty; its parent is created). None when there is none, when every one
        is unusable, or when the store cannot be reached: each case is logged. Never raises for the store."""
        into = Path(into)
        if into.exists() and (not into.is_dir() or any(into.iterdir())):
            raise ValueError(f"restore target {into} exists and is not an empty directory")
        paths = PartitionPaths(self.app_id, store_name, changelog_partition)
        where = f"{store_name}[{changelog_partition}]"
        try:
            listing = self.catalog.list_partition(paths)
        except SnapshotStoreError as exc:
            log.warning("no snapshot of %s can be read (%s); restoring from the changelog", where, exc)
            return None
        tried = 0
        for ref in listing.readable:
            manifest = ref.manifest
            if manifest is None:  # readable ones have one; keeps the type checker content
                continue
            if local_offset is not None and manifest.changelog_offset <= local_offset:
                break  # this one and every older one hold less than the local store
            tried += 1
            try:
                return self._fetch_one(ref, manifest, into)
            except _Unusable as exc:
                log.warning("snapshot %s of %s is unusable (%s); trying an older one", ref.name, where, exc)
            except SnapshotStoreError as exc:
                log.warning("snapshot %s of %s cannot be downloaded (%s); restoring from the changelog",
                            ref.name, where, exc)
                return None
        if tried:
            log.warning("no usable snapshot of %s (%d tried); restoring from the changelog", where, tried)
        return None

    def _fetch_one(self, ref: ManifestRef, manifest: Manifest, into: Path) -> SnapshotFetched:
        started = self._clock()
        into.parent.mkdir(parents=True, exist_ok=True)
        staging = into.parent / f".{into.name}.download-{uuid.uuid4().hex[:12]}"
        staging.mkdir()
        stop = threading.Event()
        targets: list[_Target] = []
        buffers = _Buffers(self.part_bytes)
        try:
            with concurrent.futures.ThreadPoolExecutor(self.concurrency, "hotstate-snapshot-get") as pool:
                # Largest first: the long downloads start early and the pool drains evenly.
                futures = []
                for f in sorted(manifest.files, key=lambda f: f.size, reverse=True):
                    if not self.objects.supports_ranges:
                        futures.append(pool.submit(self._download, f, staging, stop))
                        continue
                    parts = max(1, -(-f.size // self.part_bytes))
                    targets.append(target := _Target(f, staging / f.name, parts, self.direct_io))
                    futures += [pool.submit(self._download_part, target, i, buffers, stop) for i in range(parts)]
                try:
                    for future in concurrent.futures.as_completed(futures):
                        future.result()
                except BaseException:
                    stop.set()
                    for future in futures:
                        future.cancel()
                    raise
            if into.exists():
                into.rmdir()  # empty (checked by fetch)
            staging.rename(into)
        finally:
            for target in targets:
                target.close()
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        seconds = self._clock() - started
        log.info("snapshot %s downloaded: %d files, %d bytes in %.2f s", ref.name, len(manifest.files),
                 manifest.num_bytes, seconds)
        return SnapshotFetched(manifest.changelog_offset, manifest.num_bytes, seconds, into)

    def _download(self, f: FileEntry, staging: Path, stop: threading.Event) -> None:
        if stop.is_set():
            return
        try:
            size, digest = self.objects.download(f.object, staging / f.name, self.metrics.add_downloaded)
        except ObjectMissingError:
            raise _Unusable(f"object {f.object} is missing") from None
        if size != f.size:
            raise _Unusable(f"{f.name} is {size} bytes, the manifest says {f.size} (truncated or replaced)")
        if digest != f.sha256:
            raise _Unusable(f"{f.name} has sha256 {digest}, the manifest says {f.sha256} (altered)")

    def _download_part(self, target: _Target, index: int, buffers: _Buffers, stop: threading.Event) -> None:
        """Range ``index`` of a file from an object server (the whole file in one plain GET when it has one part):
        into this thread's buffer, written to the file, then hashed in its turn; the last one checks the file."""
        if stop.is_set() or target.failed:
            return
        try:
            self._fetch_part(target, index, buffers.get(), stop)
        except BaseException:
            target.fail()
            raise

    def _fetch_part(self, target: _Target, index: int, buffer: memoryview, stop: threading.Event) -> None:
        f = target.entry
        start = index * self.part_bytes
        end = min(start + self.part_bytes, f.size)
        try:
            n, size = self.objects.read_into(f.object, buffer, start, end, whole=target.parts == 1,
                                             on_chunk=self.metrics.add_downloaded)
        except ObjectMissingError:
            raise _Unusable(f"object {f.object} is missing") from None
        except SnapshotStoreError:
            info = self.objects.head(f.object)  # a range past the end of a shorter object fails: say why
            if info is None:
                raise _Unusable(f"object {f.object} is missing") from None
            if info.size != f.size:
                raise _Unusable(f"{f.name} is {info.size} bytes, the manifest says {f.size} (truncated or "
                                "replaced)") from None
            raise
        if size != f.size or n != end - start:
            raise _Unusable(f"{f.name} is {size} bytes, the manifest says {f.size} (truncated or replaced)")
        target.write(buffer, n, start)
        if not target.wait_turn(index, stop):
            return  # another range of this file, or of the snapshot, failed: its error is the one raised
        target.digest.update(buffer[:n])  # hashlib releases the GIL for a buffer this large
        if not target.hashed_one():
            return
        target.finish()
        digest = target.digest.hexdigest()
        if digest != f.sha256:
            raise _Unusable(f"{f.name} has sha256 {digest}, the manifest says {f.sha256} (altered)")
