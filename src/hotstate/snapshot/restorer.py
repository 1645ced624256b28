"""Fetch a store partition's newest usable snapshot into a local directory (the changelog reader's
DOWNLOADING state calls ``Restorer.fetch``; then it opens the files and replays the changelog tail from the
returned offset).

- Manifests are tried newest first (epoch, then offset); one of an unknown format is skipped (a warning).
- A snapshot no newer than the local state (``local_offset``) is not downloaded: None.
- Files download in parallel (``concurrency`` GETs at a time), each streamed to disk in chunks: memory stays
  under ``concurrency`` x ``objects.DOWNLOAD_CHUNK_BYTES`` whatever the sizes. From an object server, a file
  larger than ``part_bytes`` is fetched as ranges of that size, in parallel too (``ObjectStore.download_range``):
  a store partition's snapshot is mostly one or two large SST files, and one GET stream is far slower than
  the server (docs/benchmarks.md, "Restore by download in bench/restore.py"). Such a file is hashed once all its
  ranges are written.
- Every file's size and sha256 are checked against the manifest. A missing, truncated or altered object:
  a warning, and the next older manifest is tried; none left: None (the caller replays the changelog).
- Files land in a hidden sibling directory that is renamed to ``into`` only when all are verified: the
  target never holds a partial snapshot, and a failed try leaves nothing behind.
"""
from __future__ import annotations

import concurrent.futures
import logging
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
from .objects import ObjectMissingError, ObjectStore, sha256_file

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


class _RangedFile:
    """A file fetched as ranges: the open file they are written into, and how many ranges are still to come.
    The worker that writes the last range closes it and checks the file (``finish_range`` returns True)."""

    def __init__(self, entry: FileEntry, path: Path, ranges: int):
        self.entry = entry
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self._left = ranges
        self._lock = threading.Lock()

    def finish_range(self) -> bool:
        with self._lock:
            self._left -= 1
            last = self._left == 0
        if last:
            self.close()
        return last

    def close(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)


class Restorer:
    PART_BYTES = 16 * 1024 * 1024  # ranges of a large file fetched in parallel (object servers only)

    def __init__(self, objects: ObjectStore, app_id: str, *, concurrency: int = 4,
                 metrics: SnapshotMetrics | None = None, catalog: Catalog | None = None,
                 clock: Callable[[], float] = time.monotonic, part_bytes: int | None = None):
        """``concurrency``: GETs in flight at most (whole files or ranges); ``part_bytes``: the size of a range
        (``PART_BYTES`` by default)."""
        if concurrency < 1:
            raise ValueError(f"concurrency={concurrency} must be >= 1")
        self.part_bytes = self.PART_BYTES if part_bytes is None else part_bytes
        if self.part_bytes < 1:
            raise ValueError(f"part_bytes={self.part_bytes} must be >= 1")
        self.objects = objects
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
        ranged: list[_RangedFile] = []
        try:
            with concurrent.futures.ThreadPoolExecutor(self.concurrency, "hotstate-snapshot-get") as pool:
                # Largest first: the long downloads start early and the pool drains evenly.
                futures = []
                for f in sorted(manifest.files, key=lambda f: f.size, reverse=True):
                    if f.size <= self.part_bytes or not self.objects.supports_ranges:
                        futures.append(pool.submit(self._download, f, staging, stop))
                        continue
                    starts = range(0, f.size, self.part_bytes)
                    ranged.append(target := _RangedFile(f, staging / f.name, len(starts)))
                    futures += [pool.submit(self._download_range, target, start, stop) for start in starts]
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
            for target in ranged:
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

    def _download_range(self, target: _RangedFile, start: int, stop: threading.Event) -> None:
        """One range of a large file; the worker that writes its last range checks the whole file."""
        if stop.is_set():
            return
        f = target.entry
        end = min(start + self.part_bytes, f.size)
        try:
            written, size = self.objects.download_range(f.object, target.fd, start, end, self.metrics.add_downloaded)
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
        if size != f.size or written != end - start:
            raise _Unusable(f"{f.name} is {size} bytes, the manifest says {f.size} (truncated or replaced)")
        if not target.finish_range():
            return
        size, digest = sha256_file(target.path)
        if size != f.size:
            raise _Unusable(f"{f.name} is {size} bytes, the manifest says {f.size} (truncated or replaced)")
        if digest != f.sha256:
            raise _Unusable(f"{f.name} has sha256 {digest}, the manifest says {f.sha256} (altered)")
