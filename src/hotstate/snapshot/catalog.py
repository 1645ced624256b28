"""What one store partition holds in the object store, from ONE list call: its manifests (read and parsed,
newest first) and its file objects. The uploader, the garbage collector, the restorer and the CLI all
decide from such a listing.

Manifests are immutable once published, so a parsed manifest is cached by name (bounded); only manifests
not seen before cost a GET.
"""
from __future__ import annotations

import collections
import functools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import SnapshotStoreError
from ..observe.rate_limited import RateLimitedLog
from .manifest import Manifest, ManifestError, PartitionPaths, UnknownManifestVersion, parse_manifest
from .objects import ObjectInfo, ObjectMissingError, ObjectStore

log = logging.getLogger(__name__)
_CACHE_MAX = 1024


@dataclass(frozen=True)
class ManifestRef:
    """A manifest object: ``epoch`` and ``offset`` from its name; ``manifest`` if it could be read and is of
    a known format, else None with ``problem`` saying why (``unknown_version`` for a newer format)."""

    name: str
    epoch: int
    offset: int
    info: ObjectInfo
    manifest: Manifest | None
    problem: str | None = None
    unknown_version: bool = False

    @property
    def key(self) -> tuple[int, int]:
        return (self.epoch, self.offset)


@dataclass(frozen=True)
class PartitionListing:
    """``manifests`` newest first (by epoch, then offset); ``files`` by object name; ``listed_at`` is the
    monotonic time the list call started (decisions taken on this listing expire from it)."""

    paths: PartitionPaths
    listed_at: float
    manifests: tuple[ManifestRef, ...]
    files: dict[str, ObjectInfo]

    @property
    def newest(self) -> ManifestRef | None:
        """The newest manifest by name, whatever its state: the fencing reference."""
        return self.manifests[0] if self.manifests else None

    @property
    def readable(self) -> list[ManifestRef]:
        return [m for m in self.manifests if m.manifest is not None]

    @functools.cached_property
    def referenced(self) -> frozenset[str]:
        """Objects some readable manifest of this listing references."""
        return frozenset(f.object for m in self.readable for f in m.manifest.files)  # type: ignore[union-attr]


class Catalog:
    def __init__(self, objects: ObjectStore, clock: Callable[[], float] = time.monotonic,
                 warn_every_s: float = 300.0):
        self.objects = objects
        self._clock = clock
        self._cache: collections.OrderedDict[str, Manifest] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._warn = RateLimitedLog(log, every_s=warn_every_s, clock=clock)

    def list_partition(self, paths: PartitionPaths) -> PartitionListing:
        """One list call, then a GET of each manifest not read before. SnapshotStoreError if the store fails
        the list; a manifest that cannot be read is kept in the listing with its problem."""
        started = self._clock()
        listed = self.objects.list(paths.root)
        refs = []
        files = {}
        for info in listed:
            parsed = paths.parse_manifest_name(info.name)
            if parsed is not None:
                refs.append(self._read(paths, info, *parsed))
            elif info.name.startswith(paths.files):
                files[info.name] = info
        refs.sort(key=lambda r: r.key, reverse=True)
        return PartitionListing(paths, started, tuple(refs), files)

    def remember(self, manifest: Manifest) -> None:
        """Caches a manifest this process published (saves the GET when it is next listed)."""
        with self._lock:
            self._cache[manifest.name] = manifest
            while len(self._cache) > _CACHE_MAX:
                self._cache.popitem(last=False)

    def partitions(self, app_id: str) -> list[PartitionPaths]:
        """Every store partition of the app that holds objects (one list call over the app's prefix)."""
        found = set()
        for info in self.objects.list(f"{app_id}/"):
            parts = info.name.split("/")
            if len(parts) >= 4 and parts[3] in ("manifests", "files") and parts[2].isdigit():
                found.add((parts[1], int(parts[2])))
        return [PartitionPaths(app_id, store, p) for store, p in sorted(found)]

    def _read(self, paths: PartitionPaths, info: ObjectInfo, epoch: int, offset: int) -> ManifestRef:
        with self._lock:
            cached = self._cache.get(info.name)
            if cached is not None:
                self._cache.move_to_end(info.name)
                return ManifestRef(info.name, epoch, offset, info, cached)
        try:
            manifest = parse_manifest(info.name, self.objects.get_bytes(info.name), paths)
        except UnknownManifestVersion as exc:
            self._warn.warning(("version", info.name), "%s", exc)
            return ManifestRef(info.name, epoch, offset, info, None, str(exc), unknown_version=True)
        except ObjectMissingError as exc:  # deleted between the list and the GET
            return ManifestRef(info.name, epoch, offset, info, None, str(exc))
        except ManifestError as exc:
            self._warn.warning(("corrupt", info.name), "snapshot %s is unusable and is skipped: %s", info.name, exc)
            return ManifestRef(info.name, epoch, offset, info, None, str(exc))
        except SnapshotStoreError:
            raise
        self.remember(manifest)
        return ManifestRef(info.name, epoch, offset, info, manifest)


class OwnershipLost(Exception):
    """``claim_epoch``: a manifest of the claimed generation or a newer epoch was created after this ownership
    began. Another instance owns the task now: this one must publish nothing for it."""


def claim_epoch(catalog: Catalog, paths: PartitionPaths, generation: int, owned_since_s: float | None = None) -> int:
    """The fencing epoch for a new ownership of a store partition: ``generation`` (the group generation at
    which the task was assigned), raised above the newest published epoch if that is not lower (a group that
    was deleted restarts its generations; a static member may rejoin at the same generation). Claim it once
    per ownership and keep it. SnapshotStoreError if the store cannot be listed.

    A stale owner must never raise its epoch, or it would un-fence itself: ``owned_since_s`` (wall clock,
    when this ownership began) tells the two apart. Raising is allowed only above manifests created before
    the ownership began (left by an earlier owner or an earlier life of the group); a manifest of epoch >=
    ``generation`` created since means a newer owner published meanwhile: OwnershipLost. Without
    ``owned_since_s`` the caller must claim while it surely still owns the task (docs/formats.md)."""
    if generation < 0:
        raise ValueError(f"generation={generation} must be >= 0")
    listing = catalog.list_partition(paths)
    newest = listing.newest
    if newest is None or newest.epoch < generation:
        return generation
    if owned_since_s is not None:
        for ref in listing.manifests:  # newest first
            if ref.epoch < generation:
                break
            created = ref.manifest.created_at if ref.manifest is not None else ref.info.last_modified
            if created.timestamp() >= owned_since_s:
                raise OwnershipLost(
                    f"{ref.name} (epoch {ref.epoch}) was created after this instance got the task at generation "
                    f"{generation}: another instance owns it now")
    return newest.epoch + 1
