"""The snapshot manifest (JSON, ``format_version`` 1) and the object names of one store partition.

The spec is docs/formats.md ("Snapshot objects"); this module is its one implementation. Layout under the
``snapshot_store`` root::

    <app_id>/<store>/<partition>/manifests/<epoch:010>-<offset:020>.json
    <app_id>/<store>/<partition>/files/<sha256>-<file name>

A manifest's name sorts by (epoch, changelog offset), so one list call of ``manifests/`` finds the newest.
Files are content-addressed: two writers never write different bytes under one name, and an SST file
(immutable) is uploaded once and referenced by every later manifest that still holds it.
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import orjson

FORMAT_VERSION = 1
MANIFEST_SUFFIX = ".json"
EPOCH_DIGITS = 10
OFFSET_DIGITS = 20
_MANIFEST_NAME = re.compile(r"(\d{%d})-(\d{%d})\.json" % (EPOCH_DIGITS, OFFSET_DIGITS))
_SHA256 = re.compile(r"[0-9a-f]{64}")
# A file name RocksDB writes into a checkpoint: no directories, nothing hidden.
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_NAME_PART = re.compile(r"[A-Za-z0-9._-]{1,249}")


class ManifestError(ValueError):
    """A manifest cannot be used: not JSON, a field missing or out of range, or a file entry that does not
    belong to its partition. Readers skip it (with a warning) and try an older one."""


class UnknownManifestVersion(ManifestError):
    """A manifest of a format version this hotstate does not know (written by a newer one): skipped."""

    def __init__(self, name: str, version: object):
        self.version = version
        super().__init__(f"manifest {name} has format_version {version!r}; this hotstate reads version "
                         f"{FORMAT_VERSION}: it is ignored (a newer hotstate wrote it)")


@dataclass(frozen=True)
class PartitionPaths:
    """Object names of one store partition (a store of one task: its changelog partition)."""

    app_id: str
    store: str
    partition: int

    def __post_init__(self) -> None:
        for part in (self.app_id, self.store):
            if not _NAME_PART.fullmatch(part) or part in (".", ".."):
                raise ValueError(f"{part!r} cannot be part of an object name")
        if not isinstance(self.partition, int) or self.partition < 0:
            raise ValueError(f"partition {self.partition!r} must be an integer >= 0")

    @property
    def root(self) -> str:
        return f"{self.app_id}/{self.store}/{self.partition}/"

    @property
    def manifests(self) -> str:
        return f"{self.root}manifests/"

    @property
    def files(self) -> str:
        return f"{self.root}files/"

    def manifest_name(self, epoch: int, offset: int) -> str:
        if not 0 <= epoch < 10 ** EPOCH_DIGITS or not 0 <= offset < 10 ** OFFSET_DIGITS:
            raise ValueError(f"epoch {epoch} or offset {offset} out of range for a manifest name")
        return f"{self.manifests}{epoch:0{EPOCH_DIGITS}d}-{offset:0{OFFSET_DIGITS}d}{MANIFEST_SUFFIX}"

    def parse_manifest_name(self, name: str) -> tuple[int, int] | None:
        """(epoch, offset) of a manifest object name, or None if the name is not one."""
        if not name.startswith(self.manifests):
            return None
        m = _MANIFEST_NAME.fullmatch(name[len(self.manifests):])
        return (int(m.group(1)), int(m.group(2))) if m else None

    def file_object(self, file_name: str, sha256: str) -> str:
        return f"{self.files}{sha256}-{file_name}"


@dataclass(frozen=True)
class FileEntry:
    """One file of the checkpoint: its local ``name`` (as RocksDB needs it), the ``object`` holding it,
    ``size`` in bytes and ``sha256`` (hex) of its content."""

    name: str
    object: str
    size: int
    sha256: str

    @property
    def is_sst(self) -> bool:
        return self.name.endswith(".sst")


@dataclass(frozen=True)
class Writer:
    """Who published: ``instance`` (group_instance_id or a per-process id), ``pid``, ``host`` and ``epoch``
    (the fencing epoch the manifest's name carries: the group generation of the writer's ownership)."""

    instance: str
    pid: int
    host: str
    epoch: int


@dataclass(frozen=True)
class Manifest:
    app_id: str
    store: str
    task_id: str
    changelog_topic: str
    changelog_partition: int
    changelog_offset: int  # the next changelog offset to apply (the store's convention)
    files: tuple[FileEntry, ...]
    created_at: dt.datetime  # UTC
    writer: Writer
    format_version: int = FORMAT_VERSION

    @property
    def epoch(self) -> int:
        return self.writer.epoch

    @property
    def num_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def paths(self) -> PartitionPaths:
        return PartitionPaths(self.app_id, self.store, self.changelog_partition)

    @property
    def name(self) -> str:
        return self.paths.manifest_name(self.epoch, self.changelog_offset)

    def check(self) -> None:
        """Always-on invariants (run before publishing and after reading): ManifestError if one fails."""
        paths = self.paths  # checks app_id, store and partition
        if not isinstance(self.changelog_offset, int) or self.changelog_offset < 0:
            raise ManifestError(f"changelog_offset {self.changelog_offset!r} must be an integer >= 0")
        if not isinstance(self.writer.epoch, int) or self.writer.epoch < 0:
            raise ManifestError(f"epoch {self.writer.epoch!r} must be an integer >= 0")
        if not self.files:
            raise ManifestError("a manifest lists at least one file")
        names = [f.name for f in self.files]
        if len(set(names)) != len(names):
            raise ManifestError("a file name is listed twice")
        if "CURRENT" not in names:
            raise ManifestError("a RocksDB checkpoint has a CURRENT file; this manifest lists none")
        for f in self.files:
            if not _FILE_NAME.fullmatch(f.name):
                raise ManifestError(f"file name {f.name!r} is not a plain file name")
            if not _SHA256.fullmatch(f.sha256) or not isinstance(f.size, int) or f.size < 0:
                raise ManifestError(f"file {f.name} has a malformed size or sha256")
            if f.object != paths.file_object(f.name, f.sha256):
                raise ManifestError(f"file {f.name} names object {f.object!r}, not its partition's "
                                    f"{paths.file_object(f.name, f.sha256)!r}")

    def to_json(self) -> bytes:
        self.check()
        return orjson.dumps({
            "format_version": self.format_version,
            "app_id": self.app_id,
            "store": self.store,
            "task_id": self.task_id,
            "changelog_topic": self.changelog_topic,
            "changelog_partition": self.changelog_partition,
            "changelog_offset": self.changelog_offset,
            "created_at": self.created_at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds"),
            "writer": {"instance": self.writer.instance, "pid": self.writer.pid, "host": self.writer.host,
                       "epoch": self.writer.epoch},
            "files": [{"name": f.name, "object": f.object, "size": f.size, "sha256": f.sha256} for f in self.files],
        }, option=orjson.OPT_INDENT_2)


def parse_manifest(name: str, data: bytes, paths: PartitionPaths) -> Manifest:
    """The manifest stored at ``name`` of ``paths``. UnknownManifestVersion for a future format, ManifestError
    when it is unusable: malformed, or not the one its name says (partition, epoch, offset)."""
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ManifestError(f"manifest {name} is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"manifest {name} is not a JSON object")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise UnknownManifestVersion(name, version)
    try:
        w = doc["writer"]
        manifest = Manifest(
            app_id=doc["app_id"], store=doc["store"], task_id=doc["task_id"],
            changelog_topic=doc["changelog_topic"], changelog_partition=doc["changelog_partition"],
            changelog_offset=doc["changelog_offset"],
            files=tuple(FileEntry(f["name"], f["object"], f["size"], f["sha256"]) for f in doc["files"]),
            created_at=dt.datetime.fromisoformat(doc["created_at"]),
            writer=Writer(w["instance"], w["pid"], w["host"], w["epoch"]))
        manifest.check()
    except ManifestError as exc:
        raise ManifestError(f"manifest {name}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"manifest {name} is malformed ({exc!r})") from None
    if manifest.paths != paths or manifest.name != name:
        raise ManifestError(f"manifest {name} describes {manifest.name}: it is not the one its name says")
    return manifest
