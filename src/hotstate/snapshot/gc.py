"""Garbage collection of one store partition's snapshot objects (the rule is docs/formats.md, "GC").

1. A writer whose epoch is older than the newest manifest's deletes nothing (it is stale).
2. Keep the newest ``retain`` readable manifests; delete the older readable ones. A manifest of an unknown
   (newer) format is never deleted and, since what it references cannot be known, no file object of the
   partition is deleted while one exists. An unreadable manifest is deleted once older than the grace.
3. A file object is deleted only when (a) no manifest left in the listing references it, (b) this collector
   has seen it unreferenced in listings spanning at least ``grace_s`` (its own monotonic clock; a new
   process starts counting again), and (c) the object itself is older than ``grace_s`` (the store's
   last-modified time against the wall clock).
4. Deletions happen within ``listing_valid_s`` of the listing they were decided on; later ones wait.

Why this is safe against a concurrent publisher: a writer publishes only objects that, in a listing at most
``listing_valid_s`` old, were either referenced by a manifest present in that listing (then (b) keeps them
for ``grace_s`` after that manifest's deletion) or uploaded by itself less than ``grace_s / 2`` ago (then (c)
keeps them). ``grace_s`` is more than twice ``listing_valid_s``, so the writer's manifest is visible before
any collector may delete what it references.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from .catalog import PartitionListing
from .objects import ObjectStore

log = logging.getLogger(__name__)

GC_GRACE_S = 3600.0
LISTING_VALID_S = 60.0


@dataclass(frozen=True)
class GcResult:
    manifests_deleted: tuple[str, ...] = ()
    objects_deleted: tuple[str, ...] = ()
    objects_waiting: int = 0  # unreferenced, still within the grace
    skipped: str | None = None  # why nothing was deleted, if so


class GarbageCollector:
    def __init__(self, objects: ObjectStore, retain: int, grace_s: float = GC_GRACE_S,
                 listing_valid_s: float = LISTING_VALID_S, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        if retain < 1:
            raise ValueError(f"retain={retain} must be >= 1")
        if grace_s <= 2 * listing_valid_s:
            raise ValueError(f"grace_s={grace_s} must exceed twice listing_valid_s={listing_valid_s}")
        self.objects, self.retain, self.grace_s, self.listing_valid_s = objects, retain, grace_s, listing_valid_s
        self._clock, self._wall = clock, wall_clock
        self._unreferenced_since: dict[str, float] = {}  # object name -> monotonic time first seen unreferenced

    def collect(self, listing: PartitionListing, epoch: int | None = None) -> GcResult:
        newest = listing.newest
        if epoch is not None and newest is not None and newest.epoch > epoch:
            return GcResult(skipped=f"fenced: epoch {epoch} is older than the newest manifest's {newest.epoch}")
        manifests_deleted = self._delete_manifests(listing)
        if manifests_deleted is None:
            return GcResult(skipped="decided on a listing older than listing_valid_s")
        deleted_names = set(manifests_deleted)
        kept = [m for m in listing.manifests if m.name not in deleted_names]
        if any(m.unknown_version for m in kept):
            return GcResult(manifests_deleted, skipped="a manifest of an unknown format version exists: its files "
                                                       "are unknown, so no file object is deleted")
        referenced = {f.object for m in kept if m.manifest is not None for f in m.manifest.files}
        return self._delete_objects(listing, referenced, manifests_deleted)

    def _delete_manifests(self, listing: PartitionListing) -> tuple[str, ...] | None:
        readable = listing.readable  # newest first
        doomed = [m.name for m in readable[self.retain:]]
        now_wall = self._wall()
        doomed += [m.name for m in listing.manifests
                   if m.manifest is None and not m.unknown_version
                   and now_wall - m.info.last_modified.timestamp() >= self.grace_s]
        deleted = []
        for name in doomed:
            if not self._still_valid(listing):
                return tuple(deleted) if deleted else None
            self.objects.delete(name)
            deleted.append(name)
        return tuple(deleted)

    def _delete_objects(self, listing: PartitionListing, referenced: set[str], manifests_deleted: tuple[str, ...]) -> GcResult:
        listed, now_wall = listing.listed_at, self._wall()
        since = self._unreferenced_since
        for name in list(since):
            if name not in listing.files or name in referenced:
                del since[name]
        deleted, waiting = [], 0
        for name, info in listing.files.items():
            if name in referenced:
                continue
            first = since.setdefault(name, listed)
            old_enough = listed - first >= self.grace_s and now_wall - info.last_modified.timestamp() >= self.grace_s
            if not old_enough or not self._still_valid(listing):
                waiting += 1
                continue
            self.objects.delete(name)
            del since[name]
            deleted.append(name)
        if deleted or manifests_deleted:
            log.info("snapshot gc of %s: deleted %d manifests and %d objects; %d unreferenced objects wait for "
                     "the grace", listing.paths.root, len(manifests_deleted), len(deleted), waiting)
        return GcResult(manifests_deleted, tuple(deleted), waiting)

    def _still_valid(self, listing: PartitionListing) -> bool:
        return self._clock() - listing.listed_at < self.listing_valid_s
