"""Store snapshots in object storage (issue #9): checkpoint -> upload new files -> publish a manifest;
restore = download the newest usable snapshot, then replay the changelog tail from its offset.

Independent of the runtime: it imports only config, errors, observe and records. Formats and rules:
docs/formats.md; lifecycle, threads and the crash table: docs/architecture.md ("Snapshots").
"""
from .catalog import Catalog, ManifestRef, OwnershipLost, PartitionListing, claim_epoch
from .checkpoint import CheckpointTaken, remove_checkpoints, take_checkpoint
from .gc import GC_GRACE_S, LISTING_VALID_S, GarbageCollector, GcResult
from .manifest import FORMAT_VERSION, FileEntry, Manifest, ManifestError, PartitionPaths, UnknownManifestVersion, Writer
from .objects import ObjectExistsError, ObjectInfo, ObjectMissingError, ObjectStore
from .restorer import Restorer, SnapshotFetched
from .uploader import Outcome, Ownership, SnapshotRequest, SnapshotResult, Snapshotter

__all__ = [
    "Catalog", "CheckpointTaken", "FORMAT_VERSION", "FileEntry", "GC_GRACE_S", "GarbageCollector", "GcResult",
    "LISTING_VALID_S", "Manifest", "ManifestError", "ManifestRef", "ObjectExistsError", "ObjectInfo",
    "ObjectMissingError", "ObjectStore", "Outcome", "Ownership", "OwnershipLost", "PartitionListing",
    "PartitionPaths", "Restorer", "SnapshotFetched", "SnapshotRequest", "SnapshotResult", "Snapshotter",
    "UnknownManifestVersion", "Writer", "claim_epoch", "remove_checkpoints", "take_checkpoint",
]
