"""The changelog reader's snapshot downloads (restore by download, issue #9): before a persistent store
partition's changelog is read, its newest usable snapshot is fetched into a staging directory on a pool of
download threads (``SnapshotDownloading.SNAPSHOT_DOWNLOAD_PARTITIONS_MAX`` at a time) and adopted on the
reader's thread (``ChangelogReader`` mixes this class in; its docstring has the DOWNLOADING state). A failed,
missing or unusable snapshot falls back to reading the changelog; its files never reach the store."""
from __future__ import annotations

import concurrent.futures
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from ..errors import IllegalStateTransition
from ..observe.listener import _SafeListener
from ..records import TopicPartition
from .changelog_partition import ChangelogPartition, ChangelogState, Mode

log = logging.getLogger("hotstate.runtime.changelog_reader")


class ChangelogRange(NamedTuple):
    """A store partition's changelog range, read when the reader starts on it."""

    low: int  # the changelog's first offset
    start: int  # where reading starts: the store's offset, or low when it holds no (usable) state
    end: int  # the changelog's end (high watermark) when the range was read
    local: int | None  # the store's offset, None when it holds no (usable) state


@dataclass(frozen=True)
class SnapshotFetched:
    """A snapshot ``SnapshotSource.fetch`` put into its directory: ``offset`` is its changelog offset (the
    next changelog offset to apply once its files are adopted), ``num_bytes`` and ``seconds`` what the
    download took."""

    offset: int
    num_bytes: int
    seconds: float


class SnapshotSource(Protocol):
    """Where store snapshots come from (object storage: src/hotstate/snapshot/). Called on the reader's
    download threads, for several persistent store partitions at once (each into its own directory), before
    their changelogs are read: it must be thread-safe."""

    def fetch(self, store_name: str, changelog_partition: TopicPartition, local_offset: int | None,
              into: Path) -> SnapshotFetched | None:
        """Put the files of the newest usable snapshot of this store partition into the empty directory
        ``into`` (verified: sizes and checksums) and say what they hold, or return None when there is none
        or it would not help: ``local_offset`` is the changelog offset of the store's local state (None:
        no usable local state), which a snapshot must be ahead of (by more than ``acceptable_recovery_lag``
        is the rule of issue 9). Raising is allowed: the reader logs a warning and reads the changelog."""
        ...


class Download(NamedTuple):
    """A snapshot fetch under way on the download pool, into ``staging`` (None: no staging dir could be made;
    the future holds that error)."""

    staging: str | None
    future: concurrent.futures.Future

    def discard(self) -> None:
        """Not adopted: cancel it if it has not started, and delete its files once it ends."""
        self.future.cancel()
        if self.staging is not None:
            staging = self.staging
            self.future.add_done_callback(lambda _: shutil.rmtree(staging, ignore_errors=True))


class SnapshotDownloading:
    """The download methods of ``ChangelogReader``; the reader provides the snapshot source, the staging dir,
    the listener and the pool attribute (closed in ``ChangelogReader.close``)."""

    # Store partitions whose snapshots download at once (each with the snapshot source's own GETs in flight:
    # 4 with RestorerSource, so 16 GETs and at most 16 x 16 MiB range buffers in memory). docs/benchmarks.md.
    SNAPSHOT_DOWNLOAD_PARTITIONS_MAX = 4

    # The reader's, set in its __init__.
    _snapshots: SnapshotSource | None
    _staging_dir: str | None
    _listener: _SafeListener
    _download_pool: concurrent.futures.ThreadPoolExecutor | None

    def _wants_download(self, p: ChangelogPartition, r: ChangelogRange) -> bool:
        return self._snapshots is not None and p.store.backend.persistent and r.start < r.end

    def _start_download(self, p: ChangelogPartition, r: ChangelogRange) -> Download:
        """-> DOWNLOADING: the snapshot source fetches into a new staging dir on the download pool."""
        p.transition(ChangelogState.DOWNLOADING)
        name, tp = p.store.spec.name, p.tp
        try:
            staging = tempfile.mkdtemp(prefix=f".snapshot-{name}-{tp.partition}-", dir=self._staging_dir)
        except OSError as exc:
            failed: concurrent.futures.Future = concurrent.futures.Future()
            failed.set_exception(exc)
            return Download(None, failed)
        if self._download_pool is None:
            self._download_pool = concurrent.futures.ThreadPoolExecutor(self.SNAPSHOT_DOWNLOAD_PARTITIONS_MAX,
                                                                        "hotstate-snapshot-download")
        source = self._snapshots
        if source is None:
            raise IllegalStateTransition(f"{p.tp}: a snapshot download without a snapshot source")
        return Download(staging, self._download_pool.submit(source.fetch, name, tp, r.local, Path(staging)))

    def _download(self, p: ChangelogPartition, r: ChangelogRange, started: Download | None = None) -> int:
        """DOWNLOADING, when a snapshot source is set and the store is persistent with records to read: waits for
        the download (``started``, or one started now) and adopts it; returns where reading starts (the adopted
        snapshot's offset, else ``r.start``, or ``r.low`` after a failed adoption wiped the store)."""
        store, backend = p.store, p.store.backend
        if not self._wants_download(p, r):
            return r.start
        if started is None:
            started = self._start_download(p, r)
        name, tp = store.spec.name, p.tp
        staging = started.staging
        try:
            try:
                fetched = started.future.result()
            except Exception as exc:
                log.warning("task %s store %s: fetching a snapshot failed (%r); reading the changelog %s from %d "
                            "instead", p.task.id, name, exc, tp, r.start)
                return r.start
            if fetched is None or staging is None:  # (a download without a staging dir holds its error)
                log.info("task %s store %s: no snapshot to use; reading the changelog %s from %d", p.task.id, name,
                         tp, r.start)
                return r.start
            if not r.low <= fetched.offset <= r.end or (r.local is not None and fetched.offset <= r.local):
                log.warning("task %s store %s: the snapshot's changelog offset %d is of no use (changelog [%d, %d), "
                            "local state at %s); reading the changelog %s from %d instead", p.task.id, name,
                            fetched.offset, r.low, r.end, r.local, tp, r.start)
                return r.start
            try:
                backend.open_from_files(staging)
                adopted = backend.changelog_offset()
                if adopted != fetched.offset:  # an always-on check: the files are what the snapshot says
                    raise RuntimeError(f"its files hold changelog offset {adopted}, the snapshot says {fetched.offset}")
            except Exception as exc:
                if backend.changelog_offset() == r.local:  # refused before anything of the store changed
                    log.warning("task %s store %s: the snapshot's files cannot be used (%r); reading the changelog "
                                "%s from %d instead", p.task.id, name, exc, tp, r.start)
                    return r.start
                log.warning("task %s store %s: adopting the snapshot's files failed (%r); wiping the store and "
                            "restoring it in full from %s", p.task.id, name, exc, tp)
                backend.reset()
                return r.low
            log.info("task %s store %s: adopted a snapshot at changelog offset %d (%d bytes in %.2fs); reading the "
                     "changelog %s from there", p.task.id, name, fetched.offset, fetched.num_bytes, fetched.seconds, tp)
            if p.mode is Mode.ACTIVE:
                self._listener.on_snapshot_downloaded(tp, name, fetched.offset, fetched.num_bytes, fetched.seconds)
            return fetched.offset
        finally:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
