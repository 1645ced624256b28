"""The snapshot uploader: ships checkpoints of stores to the object store on its own thread.

The caller takes a checkpoint at a commit boundary (``checkpoint.take_checkpoint``) and hands it over with
``submit``, which only queues it (one pending checkpoint per store partition: a newer one replaces an older
one still waiting, whose directory is deleted, and keeps its place: partitions are served oldest-waiting
first). The thread then, per snapshot (numbered steps; what a
crash right after each leaves is in docs/architecture.md, "Snapshots"):

1. hash the checkpoint's files (sha256; cached per file, SST files never change) -> content-addressed names;
2. list the partition (ONE list call): fenced if a manifest of a newer epoch exists, nothing to do if one
   at this epoch and offset (or later) exists;
3. upload the SST files the listing does not protect (present and referenced by a listed manifest, or
   uploaded by this uploader less than half the GC grace ago), then the other files;
4. list again and check every file is present and protected (else back to 3, at most 3 rounds);
5. publish the manifest LAST, with a conditional create, within ``publish_within_s`` of that listing (a
   process that stalled longer, e.g. stopped past its group session, lists again: it may have lost the task);
6. list again: re-upload any referenced object found missing (repair), then garbage-collect the partition;
7. delete the checkpoint directory.

Before step 2 of a request that carries an ``Ownership`` instead of an epoch, the thread claims the epoch of
that ownership (``catalog.claim_epoch``, one list call; kept until ``forget``), so the caller's thread never
waits for the store. ``forget`` (the task left this instance) drops the partition's queued checkpoint, and the
one in flight publishes nothing from then on.

A store that is unreachable or refuses: the snapshot is retried with exponential backoff (a newer
checkpoint of the same partition replaces it meanwhile), the error is logged at most once per
``error_log_every_s``; nothing is raised to the caller.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import enum
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import SnapshotStoreError
from ..observe.metrics import SnapshotMetrics
from ..observe.rate_limited import RateLimitedLog
from .catalog import Catalog, OwnershipLost, PartitionListing, claim_epoch
from .gc import GC_GRACE_S, LISTING_VALID_S, GarbageCollector
from .manifest import FileEntry, Manifest, PartitionPaths, Writer
from .objects import ObjectExistsError, ObjectStore, sha256_file

log = logging.getLogger(__name__)

_ROUNDS_MAX = 3


@dataclass(frozen=True)
class Ownership:
    """This instance's ownership of a task: the group ``generation`` at which it was assigned the task and
    when (``since_s``, wall clock, ``time.time()``). The uploader claims the fencing epoch from it."""

    generation: int
    since_s: float


@dataclass(frozen=True)
class SnapshotRequest:
    """One checkpoint to ship. ``changelog_offset``: the next changelog offset to apply, the one the store
    held when the checkpoint was taken. Only committed state may be shipped: the caller takes the checkpoint
    right after a commit (at-least-once: after the group offsets were committed; exactly_once_v2: after the
    transaction committed), on the thread that writes the store. ``epoch``: the writer's fencing epoch for this
    task (see docs/formats.md, "Fencing"); None with an ``ownership``: the uploader claims it (``claim_epoch``)
    on its thread. ``checkpoint_dir`` belongs to the uploader from ``submit`` on: it is deleted when the
    snapshot is done, replaced or dropped."""

    store_name: str
    task_id: str
    changelog_topic: str
    changelog_partition: int
    changelog_offset: int
    epoch: int | None
    checkpoint_dir: Path
    ownership: Ownership | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.store_name, self.changelog_partition)


class Outcome(enum.Enum):
    PUBLISHED = "PUBLISHED"
    UNCHANGED = "UNCHANGED"  # a manifest at this epoch and offset (or newer, same epoch) exists already
    FENCED = "FENCED"  # a manifest of a newer epoch exists: this writer is stale, it publishes nothing
    RACED = "RACED"  # another writer created the same manifest name first (same epoch and offset)
    REPLACED = "REPLACED"  # a newer checkpoint of the partition arrived before this one was shipped
    FAILED = "FAILED"  # dropped: the checkpoint is unusable, or the uploader closed before it was shipped
    CANCELLED = "CANCELLED"  # dropped: the task left this instance (``forget``) before it was published


@dataclass(frozen=True)
class SnapshotResult:
    request: SnapshotRequest
    outcome: Outcome
    manifest: str | None = None
    uploaded_files: int = 0
    uploaded_bytes: int = 0
    reused_files: int = 0
    attempts: int = 1
    seconds: float = 0.0
    error: str | None = None


@dataclass
class _Pending:
    request: SnapshotRequest
    ready_at: float = 0.0
    attempts: int = 0
    backoff_s: float = 0.0
    first_queued: float = field(default_factory=time.monotonic)


class _Stopped(Exception):
    pass


class _Cancelled(Exception):
    pass


_STALE_LISTING = object()  # _step5_publish: the listing got too old before the create: list again


class Snapshotter:
    """One per app instance. ``instance_id`` names the writer in manifests (group_instance_id, else a
    process id). Thread-safe: ``submit``, ``close`` and the read methods may be called from any thread."""

    def __init__(self, objects: ObjectStore, app_id: str, *, instance_id: str | None = None, retain: int = 3,
                 error_log_every_s: float = 300.0, gc_grace_s: float = GC_GRACE_S,
                 listing_valid_s: float = LISTING_VALID_S, publish_within_s: float | None = None,
                 upload_concurrency: int = 4,
                 backoff_initial_s: float = 1.0, backoff_max_s: float = 60.0,
                 metrics: SnapshotMetrics | None = None, results_max: int = 1000,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time):
        self.objects = objects
        self.app_id = app_id
        self.instance_id = instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.metrics = metrics if metrics is not None else SnapshotMetrics()
        self.catalog = Catalog(objects, clock=clock)
        self.gc = GarbageCollector(objects, retain, grace_s=gc_grace_s, listing_valid_s=listing_valid_s,
                                   clock=clock, wall_clock=wall_clock)
        self._grace_s, self._listing_valid_s = gc_grace_s, listing_valid_s
        # The create must follow the fence-checking listing within this (at most listing_valid_s): the runtime
        # passes less than the group session, so a process stopped long enough to lose a task lists again.
        self._publish_within_s = listing_valid_s if publish_within_s is None else min(publish_within_s,
                                                                                      listing_valid_s)
        self._concurrency = max(1, upload_concurrency)
        self._backoff_initial_s, self._backoff_max_s = backoff_initial_s, backoff_max_s
        self._clock, self._wall = clock, wall_clock
        self._errors = RateLimitedLog(log, every_s=error_log_every_s, clock=clock)
        self._cond = threading.Condition()
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._busy: tuple[str, int] | None = None
        self._busy_cancelled = False  # forget() of the partition in flight
        self._claims: dict[tuple[tuple[str, int], Ownership], int | None] = {}  # None: the ownership is lost
        self._closed = False
        self._results: list[SnapshotResult] = []
        self._results_max = results_max
        self._hashes: dict[tuple[str, int], dict[tuple[str, int, int, int], str]] = {}  # per partition
        self._uploaded_at: dict[str, float] = {}  # object name -> monotonic time this uploader uploaded it
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="hotstate-snapshot-uploader", daemon=True)
        self._started = False

    # --- the caller's side ----------------------------------------------------------------------------------

    def start(self) -> None:
        with self._cond:
            if not self._started:
                self._started = True
                self._thread.start()

    def submit(self, request: SnapshotRequest) -> None:
        """Queues the checkpoint; returns at once. A checkpoint of the same store partition still waiting is
        replaced (and its directory deleted); after ``close`` the checkpoint is deleted and dropped."""
        if (request.epoch is None) == (request.ownership is None):
            raise ValueError(f"snapshot of {request.key}: give either an epoch or an ownership, not both or none")
        replaced = None
        with self._cond:
            if self._closed:
                replaced = _Pending(request)
            else:
                old = self._pending.get(request.key)
                pending = _Pending(request)
                if old is not None:
                    replaced = old
                    pending.ready_at, pending.attempts, pending.backoff_s = old.ready_at, old.attempts, old.backoff_s
                    # It has waited since the first one: a partition replaced at every commit must not fall
                    # behind the others for ever (they are served oldest first).
                    pending.first_queued = old.first_queued
                self._pending[request.key] = pending
                self._cond.notify_all()
        if replaced is not None:
            outcome = Outcome.FAILED if replaced.request is request else Outcome.REPLACED
            self._finish(SnapshotResult(replaced.request, outcome, attempts=replaced.attempts,
                                        error="the uploader is closed" if outcome is Outcome.FAILED else None))

    def forget(self, store_name: str, changelog_partition: int) -> None:
        """The task of this store partition left this instance: its queued checkpoint is dropped (CANCELLED),
        the one in flight publishes nothing from now on, and its claimed epochs are forgotten."""
        key = (store_name, changelog_partition)
        with self._cond:
            dropped = self._pending.pop(key, None)
            if self._busy == key:
                self._busy_cancelled = True
            for claim in [c for c in self._claims if c[0] == key]:
                del self._claims[claim]
            self._cond.notify_all()
        if dropped is not None:
            self._cancelled(dropped)

    def close(self, timeout_s: float = 30.0) -> None:
        """Stops the thread (a snapshot being uploaded stops after the request in flight) and deletes the
        checkpoints still queued. Never raises."""
        with self._cond:
            self._closed = True
            dropped = list(self._pending.values())
            self._pending.clear()
            self._cond.notify_all()
        for pending in dropped:
            self._finish(SnapshotResult(pending.request, Outcome.FAILED, attempts=pending.attempts,
                                        error="the uploader closed before it was shipped"))
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(timeout_s)

    def wait_idle(self, timeout_s: float) -> bool:
        """True once nothing is queued or in flight (tests and shutdown use it)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def drain_results(self) -> list[SnapshotResult]:
        """Results since the last call (bounded: the oldest are dropped beyond ``results_max``)."""
        with self._cond:
            results, self._results = self._results, []
            return results

    # --- the thread -----------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            pending = self._next()
            if pending is None:
                return
            try:
                self._ship(pending)
            except Exception:  # a bug: never let it kill the thread
                log.exception("snapshot of %s[%d] failed unexpectedly; dropped", *pending.request.key)
                self._finish(SnapshotResult(pending.request, Outcome.FAILED, attempts=pending.attempts,
                                            error="unexpected error (logged)"))
            finally:
                with self._cond:
                    self._busy = None
                    self._cond.notify_all()

    def _next(self) -> _Pending | None:
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = self._clock()
                ready = [p for p in self._pending.values() if p.ready_at <= now]
                if ready:
                    chosen = min(ready, key=lambda p: (p.ready_at, p.first_queued))
                    del self._pending[chosen.request.key]
                    self._busy = chosen.request.key
                    self._busy_cancelled = False
                    return chosen
                wait = min((p.ready_at - now for p in self._pending.values()), default=None)
                self._cond.wait(None if wait is None else max(0.001, wait))

    def _ship(self, pending: _Pending) -> None:
        req = pending.request
        pending.attempts += 1
        started = self._clock()
        try:
            result = self._snapshot(req, pending.attempts)
        except _Stopped:
            self._finish(SnapshotResult(req, Outcome.FAILED, attempts=pending.attempts,
                                        error="the uploader closed while shipping it"))
            return
        except _Cancelled:
            self._cancelled(pending)
            return
        except SnapshotStoreError as exc:
            self._retry_later(pending, exc)
            return
        except (OSError, ValueError) as exc:  # the checkpoint directory is gone or unusable
            log.warning("snapshot of %s[%d] at offset %d dropped: its checkpoint cannot be read (%s)",
                        req.store_name, req.changelog_partition, req.changelog_offset, exc)
            self._finish(SnapshotResult(req, Outcome.FAILED, attempts=pending.attempts, error=str(exc)))
            return
        if self._failing:
            self._failing = False
            log.info("snapshot store %s works again", self.objects.location)
        self._finish(dataclasses.replace(result, attempts=pending.attempts, seconds=self._clock() - started))

    def _retry_later(self, pending: _Pending, exc: SnapshotStoreError) -> None:
        req = pending.request
        self.metrics.partition(f"{req.task_id}/{req.store_name}", req.changelog_topic).snapshot_failures_total += 1
        pending.backoff_s = min(self._backoff_max_s, max(self._backoff_initial_s, pending.backoff_s * 2))
        pending.ready_at = self._clock() + pending.backoff_s
        self._failing = True
        self._errors.warning(("store", type(exc)), "snapshot of %s[%d] at offset %d failed (attempt %d), retrying "
                             "in %.1f s: %s", req.store_name, req.changelog_partition, req.changelog_offset,
                             pending.attempts, pending.backoff_s, exc)
        with self._cond:
            newer = self._pending.get(req.key)
            if newer is None and not self._closed and not self._busy_cancelled:
                self._pending[req.key] = pending
                self._cond.notify_all()
                return
            if newer is not None:
                newer.ready_at = max(newer.ready_at, pending.ready_at)
                newer.attempts, newer.backoff_s = pending.attempts, pending.backoff_s
        self._finish(SnapshotResult(req, Outcome.REPLACED if newer is not None else Outcome.FAILED,
                                    attempts=pending.attempts, error=str(exc)))

    def _cancelled(self, pending: _Pending) -> None:
        req = pending.request
        log.info("snapshot of %s[%d] at offset %d dropped: the task left this instance", req.store_name,
                 req.changelog_partition, req.changelog_offset)
        self._finish(SnapshotResult(req, Outcome.CANCELLED, attempts=pending.attempts,
                                    error="the task left this instance"))

    def _finish(self, result: SnapshotResult) -> None:
        shutil.rmtree(result.request.checkpoint_dir, ignore_errors=True)
        with self._cond:
            self._results.append(result)
            del self._results[:-self._results_max]

    def _check_open(self) -> None:
        if self._closed:
            raise _Stopped()
        if self._busy_cancelled:
            raise _Cancelled()

    # --- one snapshot ---------------------------------------------------------------------------------------

    def _snapshot(self, req: SnapshotRequest, attempt: int) -> SnapshotResult:
        paths = PartitionPaths(self.app_id, req.store_name, req.changelog_partition)
        if req.epoch is None:
            epoch = self._claim(req, paths)
            if epoch is None:
                return SnapshotResult(req, Outcome.FENCED)
            req = dataclasses.replace(req, epoch=epoch)
        files = self._step1_hash(req, paths)
        uploaded, uploaded_bytes = set(), 0
        for _round in range(_ROUNDS_MAX):
            self._check_open()
            listing = self.catalog.list_partition(paths)  # step 2 / step 4
            verdict = self._fence(req, listing)
            if verdict is not None:
                return SnapshotResult(req, verdict)
            todo = [f for f in files if not self._protected(f.object, listing)]
            if not todo and self._clock() - listing.listed_at < self._publish_within_s:
                name = self._step5_publish(req, paths, files, listing)
                if name is _STALE_LISTING:
                    continue
                if name is None:
                    return SnapshotResult(req, Outcome.RACED, uploaded_files=len(uploaded),
                                          uploaded_bytes=uploaded_bytes)
                self._step6_repair_and_gc(req, paths, files)
                return SnapshotResult(req, Outcome.PUBLISHED, name, len(uploaded), uploaded_bytes,
                                      reused_files=len(files) - len(uploaded))
            uploaded_bytes += self._step3_upload(req, todo)
            uploaded.update(f.object for f in todo)
        raise SnapshotStoreError(f"snapshot store {self.objects.location}: {paths.root} could not be published in "
                                 f"{_ROUNDS_MAX} rounds (its objects vanished again and again, or this process "
                                 "stalled between listing and publishing); will retry")

    def _claim(self, req: SnapshotRequest, paths: PartitionPaths) -> int | None:
        """The epoch of the request's ownership, claimed once (one list call) and kept; None if the ownership
        is lost (a newer owner published since it began: docs/formats.md, "Fencing epoch")."""
        assert req.ownership is not None
        claim = (req.key, req.ownership)
        with self._cond:
            if claim in self._claims:
                return self._claims[claim]
        self._check_open()
        try:
            epoch: int | None = claim_epoch(self.catalog, paths, req.ownership.generation, req.ownership.since_s)
        except OwnershipLost as exc:
            self.metrics.snapshots_fenced_total += 1
            log.warning("snapshot of %s[%d] at offset %d is not published: %s", req.store_name,
                        req.changelog_partition, req.changelog_offset, exc)
            epoch = None
        with self._cond:
            if not self._busy_cancelled:
                self._claims[claim] = epoch
        return epoch

    def _step1_hash(self, req: SnapshotRequest, paths: PartitionPaths) -> list[FileEntry]:
        """Content-addressed entries of every checkpoint file. A file keeps its hash while its name, size,
        inode and modification time stay the same (SST files are immutable; checkpoints hard-link them)."""
        known = self._hashes.get(req.key, {})
        fresh: dict[tuple[str, int, int, int], str] = {}
        entries = []
        for entry in sorted(os.scandir(req.checkpoint_dir), key=lambda e: e.name):
            if not entry.is_file():
                raise ValueError(f"checkpoint {req.checkpoint_dir} holds {entry.name}, which is not a file")
            st = entry.stat()
            ident = (entry.name, st.st_size, st.st_ino, st.st_mtime_ns)
            digest = known.get(ident)
            if digest is None:
                self._check_open()
                size, digest = sha256_file(entry.path)
                if size != st.st_size:
                    raise ValueError(f"checkpoint file {entry.path} changed while it was read")
            fresh[ident] = digest
            entries.append(FileEntry(entry.name, paths.file_object(entry.name, digest), st.st_size, digest))
        self._hashes[req.key] = fresh
        if not entries:
            raise ValueError(f"checkpoint {req.checkpoint_dir} is empty")
        return entries

    def _fence(self, req: SnapshotRequest, listing: PartitionListing) -> Outcome | None:
        newest = listing.newest
        if newest is None:
            return None
        assert req.epoch is not None  # claimed in _snapshot
        if newest.epoch > req.epoch:
            self.metrics.snapshots_fenced_total += 1
            log.warning("snapshot of %s[%d] at offset %d is not published: the newest snapshot %s has epoch %d, "
                        "newer than this writer's %d (the task has a newer owner)", req.store_name,
                        req.changelog_partition, req.changelog_offset, newest.name, newest.epoch, req.epoch)
            return Outcome.FENCED
        if newest.epoch == req.epoch and newest.offset >= req.changelog_offset:
            return Outcome.UNCHANGED
        return None

    def _protected(self, name: str, listing: PartitionListing) -> bool:
        """The GC keeps this object for long enough that a manifest published now may reference it."""
        if name not in listing.files:
            return False
        uploaded = self._uploaded_at.get(name)
        if uploaded is not None and listing.listed_at - uploaded < self._grace_s / 2:
            return True
        return name in listing.referenced

    def _step3_upload(self, req: SnapshotRequest, todo: list[FileEntry]) -> int:
        """SST files first, then the small per-snapshot files; ``upload_concurrency`` at a time."""
        part = self.metrics.partition(f"{req.task_id}/{req.store_name}", req.changelog_topic)
        total = 0
        for group in ([f for f in todo if f.is_sst], [f for f in todo if not f.is_sst]):
            with concurrent.futures.ThreadPoolExecutor(self._concurrency, "hotstate-snapshot-put") as pool:
                futures = {pool.submit(self._put, req, f): f for f in group}
                for future in concurrent.futures.as_completed(futures):
                    f = futures[future]
                    future.result()  # raises SnapshotStoreError (the other uploads finish first)
                    total += f.size
                    part.snapshot_upload_bytes_total += f.size
        return total

    def _put(self, req: SnapshotRequest, f: FileEntry) -> None:
        self._check_open()
        source = Path(req.checkpoint_dir) / f.name
        if os.stat(source).st_size != f.size:  # OSError if it is gone: the checkpoint is unusable
            raise ValueError(f"checkpoint file {source} changed after it was hashed")
        started = self._clock()
        self.objects.put_file(f.object, source)
        with self._cond:
            self._uploaded_at[f.object] = started
            horizon = started - self._grace_s
            if len(self._uploaded_at) > 10_000:
                self._uploaded_at = {k: t for k, t in self._uploaded_at.items() if t > horizon}

    def _step5_publish(self, req: SnapshotRequest, paths: PartitionPaths, files: list[FileEntry],
                       listing: PartitionListing) -> object:
        """The manifest's name; None if another writer created it first; ``_STALE_LISTING`` if the listing that
        checked the fence is older than ``publish_within_s`` by now (checked right before the create)."""
        assert req.epoch is not None
        manifest = Manifest(
            app_id=self.app_id, store=req.store_name, task_id=req.task_id, changelog_topic=req.changelog_topic,
            changelog_partition=req.changelog_partition, changelog_offset=req.changelog_offset,
            files=tuple(files), created_at=_utc(self._wall()),
            writer=Writer(self.instance_id, os.getpid(), socket.gethostname(), req.epoch))
        data = manifest.to_json()  # checks the manifest's invariants first
        self._check_open()
        if self._clock() - listing.listed_at >= self._publish_within_s:
            return _STALE_LISTING
        try:
            self.objects.create(manifest.name, data)
        except ObjectExistsError:
            log.info("snapshot %s was published by another writer first; this one is dropped", manifest.name)
            return None
        self.catalog.remember(manifest)
        part = self.metrics.partition(f"{req.task_id}/{req.store_name}", req.changelog_topic)
        part.snapshots_total += 1
        part.snapshot_last_offset = req.changelog_offset
        part.snapshot_last_created_s = manifest.created_at.timestamp()
        return manifest.name

    def _step6_repair_and_gc(self, req: SnapshotRequest, paths: PartitionPaths, files: list[FileEntry]) -> None:
        """Published: a failure here only delays the GC, the snapshot stands."""
        try:
            listing = self.catalog.list_partition(paths)
            missing = [f for f in files if f.object not in listing.files]
            if missing:
                log.warning("snapshot of %s[%d] at offset %d references %d objects that are gone (deleted by "
                            "someone else?); uploading them again", req.store_name, req.changelog_partition,
                            req.changelog_offset, len(missing))
                self._step3_upload(req, missing)
                return  # collect on the next snapshot, from a listing that has them
            self.gc.collect(listing, req.epoch)
        except SnapshotStoreError as exc:
            self._errors.warning(("gc", type(exc)), "snapshot gc of %s skipped: %s", paths.root, exc)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc)
