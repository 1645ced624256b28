"""The object-store port of the snapshot package, over obstore (S3 and a local directory).

Every name here is relative to the ``snapshot_store`` URL (its bucket and prefix, or its directory). Every
failure becomes a hotstate error that says what happened and what to do, with credentials redacted:

- ``ObjectMissingError``: the object is not there (a get or head of a name that does not exist).
- ``ObjectExistsError``: a conditional create found the name taken (another writer published first).
- ``SnapshotStoreDeniedError``: credentials or permissions refused: fix the environment, retrying won't help.
- ``SnapshotStoreError``: anything else (unreachable, timed out, an error answer, a local disk error).

Conditional create (``create``) is obstore's PutMode "create": on S3 a PUT with ``If-None-Match: *``
(answered 412 when the name exists); on ``file://`` obstore's LocalStore writes a staging file beside the
target and hard-links it to the name, which fails with EEXIST if the name exists: atomic on a local POSIX
file system and on NFS (the server does the link). A file system without hard links fails the create with
an error instead: publishing stops there, it never falls back to an unconditional write (docs/formats.md).

Thread safety: one ``ObjectStore`` may be used from several threads at once (obstore's stores are).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import obstore
from obstore.exceptions import (AlreadyExistsError, PermissionDeniedError, PreconditionError,
                                UnauthenticatedError)
from obstore.store import LocalStore, S3Store

from ..config import SnapshotStoreLocation, parse_snapshot_store, redact
from ..errors import SnapshotStoreDeniedError, SnapshotStoreError

# obstore's own retries of one request stay short: the uploader retries whole snapshots with its own
# backoff, and a restore falls back to the changelog instead of waiting minutes for an absent store.
_RETRY = {"max_retries": 2, "retry_timeout": dt.timedelta(seconds=10),
          "backoff": {"init_backoff": dt.timedelta(milliseconds=100), "max_backoff": dt.timedelta(seconds=2),
                      "base": 2}}
_DEFAULT_CLIENT = {"connect_timeout": "5s"}
# ``download`` writes in chunks of this size: one object never costs more memory than one chunk.
DOWNLOAD_CHUNK_BYTES = 8 * 1024 * 1024
# ``read_into`` copies each chunk into the caller's buffer as it arrives: obstore need not gather big ones first.
READ_CHUNK_BYTES = 256 * 1024
_OS_MESSAGE = re.compile(r'message: "([^"]+)"')


class ObjectMissingError(SnapshotStoreError):
    """The named object does not exist."""


class ObjectExistsError(SnapshotStoreError):
    """A conditional create found the name taken: another writer created it first."""


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: ``name`` relative to the store's root, ``size`` in bytes, ``last_modified`` as
    the object store's clock has it (UTC)."""

    name: str
    size: int
    last_modified: dt.datetime


class ObjectStore:
    """put / create / get / download / list / delete / head over one obstore store."""

    def __init__(self, location: SnapshotStoreLocation, create: bool = True):
        """``create``: make a ``file://`` store's directory if it does not exist (False: it must exist)."""
        self.location = location
        if location.scheme == "file":
            if not create and not os.path.isdir(location.path):
                raise SnapshotStoreError(f"snapshot store {location}: the directory does not exist")
            self._store: Any = LocalStore(location.path, mkdir=create)
        else:
            self._store = S3Store(location.bucket, prefix=location.path or None, config=location.store_options,
                                  client_options={**_DEFAULT_CLIENT, **location.client_options},
                                  retry_config=_RETRY)

    @classmethod
    def open(cls, url: str, options: dict[str, Any] | None = None, create: bool = True) -> "ObjectStore":
        """ConfigError for an invalid URL or options (``Config`` has checked them already)."""
        try:
            return cls(parse_snapshot_store(url, options), create)
        except OSError as exc:  # LocalStore cannot create or use the directory
            raise SnapshotStoreError(f"snapshot store {redact(url)}: cannot use the directory ({exc.strerror}); "
                                     "make sure it exists or can be created and this user may write it") from None

    def __repr__(self) -> str:
        return f"ObjectStore({self.location})"

    # --- writes ---------------------------------------------------------------------------------------------

    def put_file(self, name: str, path: Path) -> None:
        """Uploads a local file, streamed (multipart above 5 MiB); the object appears whole or not at all."""
        self._call("upload", name, lambda: obstore.put(self._store, name, Path(path)))

    def put_bytes(self, name: str, data: bytes) -> None:
        self._call("write", name, lambda: obstore.put(self._store, name, data))

    def create(self, name: str, data: bytes) -> None:
        """Writes ``data`` only if ``name`` does not exist yet; ObjectExistsError if it does."""
        self._call("create", name, lambda: obstore.put(self._store, name, data, mode="create", use_multipart=False))

    def delete(self, name: str) -> None:
        """Deletes the object; one that is already gone is not an error."""
        try:
            self._call("delete", name, lambda: obstore.delete(self._store, name))
        except ObjectMissingError:
            pass

    # --- reads ----------------------------------------------------------------------------------------------

    def get_bytes(self, name: str) -> bytes:
        """A small object's bytes (manifests); use ``download`` for data files."""
        return self._call("read", name, lambda: bytes(obstore.get(self._store, name).bytes()))

    def download(self, name: str, dest: Path, on_chunk: Callable[[int], None] | None = None) -> tuple[int, str]:
        """Streams the object into the file ``dest`` (created or truncated), one chunk in memory at a time;
        returns (bytes written, sha256 hex of them). ``on_chunk(n)`` is called after each chunk written.
        A ``file://`` store's object is copied by the kernel (``shutil.copyfile``), then hashed from the copy:
        obstore's local streaming reads at about a third of that speed here."""
        if self.location.scheme == "file":
            return self._call("download", name, lambda: self._copy_local(name, dest, on_chunk))

        def run() -> tuple[int, str]:
            result = obstore.get(self._store, name)
            digest = hashlib.sha256()
            written = 0
            with open(dest, "wb") as out:
                for chunk in result.stream(min_chunk_size=DOWNLOAD_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    if on_chunk is not None:
                        on_chunk(len(chunk))
            return written, digest.hexdigest()

        return self._call("download", name, run)

    @property
    def supports_ranges(self) -> bool:
        """Whether ``read_into`` of ranges is worth it: ranged GETs run in parallel against a server; a ``file://``
        store's objects are copied whole by the kernel, faster than any split."""
        return self.location.scheme != "file"

    def read_into(self, name: str, buffer: memoryview, start: int, end: int, whole: bool = False,
                  on_chunk: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Reads bytes [start, end) of the object into ``buffer`` (from its beginning; at least ``end - start``
        long), a stream of chunks each copied as it arrives (no chunk is accumulated by obstore first); returns
        (bytes read, the object's size as the store reports it). ``whole``: one plain GET of the object
        (``start`` 0, ``end`` its expected size; also works for an empty object, which no range can ask for).
        Fewer bytes than asked when the object ends before ``end``; never more than ``end - start`` (a longer
        object's size says so); a range that starts at or past its end fails (SnapshotStoreError)."""
        want = end - start
        if len(buffer) < want:
            raise ValueError(f"a buffer of {len(buffer)} bytes cannot hold {want}")

        def run() -> tuple[int, int]:
            result = obstore.get(self._store, name, options={} if whole else {"range": (start, end)})
            size = int(result.meta["size"])
            at = 0
            for chunk in result.stream(min_chunk_size=READ_CHUNK_BYTES):
                n = min(len(chunk), want - at)
                buffer[at:at + n] = memoryview(chunk)[:n]
                at += n
                if on_chunk is not None:
                    on_chunk(n)
                if at == want and n < len(chunk):
                    break  # a longer object than the manifest's: its size tells the caller
            return at, size

        return self._call("download", name, run)

    def _copy_local(self, name: str, dest: Path, on_chunk: Callable[[int], None] | None) -> tuple[int, str]:
        source = Path(self.location.path) / name
        if ".." in Path(name).parts or Path(name).is_absolute():
            raise ValueError(f"object name {name!r} leaves the store's directory")
        if "#" in source.name or not source.is_file():  # obstore's staging files are not objects
            raise FileNotFoundError(name)
        shutil.copyfile(source, dest)
        size, digest = sha256_file(dest)
        if on_chunk is not None:
            on_chunk(size)
        return size, digest

    def head(self, name: str) -> ObjectInfo | None:
        """The object's size and time, or None if it does not exist."""
        try:
            return _info(self._call("look up", name, lambda: obstore.head(self._store, name)))
        except ObjectMissingError:
            return None

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose name starts with ``prefix`` (a folder-like prefix ending in '/'), in name order.
        One list call (paged by the store for more than 1000 objects)."""

        def run() -> list[ObjectInfo]:
            found = [_info(meta) for chunk in obstore.list(self._store, prefix) for meta in chunk]
            return sorted(found, key=lambda info: info.name)

        try:
            return self._call("list", prefix, run)
        except ObjectMissingError:  # a local directory that does not exist yet holds nothing
            return []

    # --- errors ---------------------------------------------------------------------------------------------

    def _call(self, doing: str, name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except FileNotFoundError:
            raise ObjectMissingError(f"snapshot store {self.location}: {name} does not exist") from None
        except (AlreadyExistsError, PreconditionError):
            raise ObjectExistsError(f"snapshot store {self.location}: {name} exists already (another writer "
                                    "created it first)") from None
        except (PermissionDeniedError, UnauthenticatedError) as exc:
            raise SnapshotStoreDeniedError(
                f"snapshot store {self.location}: {doing} {name} was refused: {_first_line(exc)}. Check the "
                "credentials in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN "
                "or a role) and the bucket's policy") from None
        except Exception as exc:  # obstore's GenericError and others, OSError from a local disk
            raise SnapshotStoreError(
                f"snapshot store {self.location}: {doing} {name} failed: {_first_line(exc)}. Check that the "
                "store is reachable (snapshot_store, the endpoint option) and has space; snapshots are "
                "retried with backoff and restores fall back to the changelog") from None


def _info(meta: Any) -> ObjectInfo:
    return ObjectInfo(meta["path"], int(meta["size"]), meta["last_modified"])


def _first_line(exc: BaseException) -> str:
    """obstore's message without its multi-line debug dump, plus the innermost OS message it names (e.g.
    "Connection refused"), redacted."""
    text = str(exc)
    first = text.split("\n", 1)[0].strip() or type(exc).__name__
    causes = _OS_MESSAGE.findall(text)
    if causes and causes[-1] not in first:
        first = f"{first} ({causes[-1]})"
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, FileNotFoundError):
        first = f"{exc.strerror}: {first}" if exc.strerror not in first else first
    return redact(first)


def sha256_file(path: str | os.PathLike[str]) -> tuple[int, str]:
    """(size, sha256 hex) of a local file (hashlib.file_digest: chunked, the GIL released while hashing)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return size, hashlib.file_digest(f, "sha256").hexdigest()
