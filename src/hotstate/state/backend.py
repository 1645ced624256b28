"""The byte-level store a task writes to: what every backend must guarantee, what restore needs of it
(``RestoreTarget``), and the registry from a store's kind to the backend that serves it.

A backend holds key/value bytes plus one number: the changelog offset it is consistent with
(``changelog_offset``: every changelog record below it is applied, none at or above it). Data and
that offset always change together, in one atomic write. There is no checkpoint file.

``RestoreTarget`` is the part the changelog reader (runtime/changelog_reader.py) uses to restore a store or
keep a standby current: bulk writes without the WAL, a flush it need not wait for, adopting a directory of
store files (a downloaded snapshot) and dropping all state. Every backend implements all of it; a backend
whose only bulk path is ``restore(entries, offset)`` gets the bulk-write half from ``SimpleRestoreTarget``.

The registry (``register_backend`` / ``backend_kind``) maps ``StoreSpec.kind`` to a factory; "rocksdb" and
"memory" are built in, and so are the windowed kinds "window-rocksdb" and "window-memory"
(``WindowBackend``: the same contract, plus a retention and a stream time; state/window_store.py) and the
session kinds "session-rocksdb" and "session-memory" (the same backends, keyed by sessions;
state/session_store.py).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

OFFSET = struct.Struct(">q")

# One entry of a write: value None deletes the key.
Entry = tuple[bytes, "bytes | None"]

ROCKSDB = "rocksdb"
MEMORY = "memory"
WINDOW_ROCKSDB = "window-rocksdb"
WINDOW_MEMORY = "window-memory"
SESSION_ROCKSDB = "session-rocksdb"
SESSION_MEMORY = "session-memory"


class RestoreBatch(Protocol):
    """A batch the changelog reader fills record by record (``put`` / ``delete``), then hands to
    ``RestoreTarget.write_restore_batch``."""

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class RestoreTarget(Protocol):
    """What restoring a store (and keeping a standby current) needs of its backend. All of it runs on the
    state updater's thread while no other thread writes the store.

    Bulk write: ``begin_restore`` (a hint, before the first batch of a restore; never called for standbys),
    then any number of ``restore_batch`` + ``write_restore_batch`` (data and offset atomic, no WAL: not
    durable yet), then either ``end_restore`` (durable now, processing settings back) or the asynchronous
    pair ``request_restore_flush`` + ``restore_flushed`` polled until True (durable, data before offset),
    followed by ``end_restore``. A crash before the data is durable leaves the store at an older offset
    with its data at or ahead of that offset; replaying the changelog from the stored offset repairs it.
    """

    name: str
    persistent: bool  # False: the store lives in memory, holds no files and starts empty after a restart

    def changelog_offset(self) -> int | None:
        """The next changelog offset to apply, or None if the store holds no state."""
        ...

    def write(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        """Apply entries and set changelog_offset in one atomic, durable (WAL) write.

        Offsets never go backwards: a smaller changelog_offset than the stored one is a bug and raises."""
        ...

    def begin_restore(self, records: int) -> None:
        """About ``records`` changelog records will be restored: a backend may switch to bulk-load settings
        until ``end_restore``."""
        ...

    def restore_batch(self) -> RestoreBatch:
        """An empty batch for ``write_restore_batch``."""
        ...

    def write_restore_batch(self, batch: RestoreBatch, changelog_offset: int) -> None:
        """Writes the batch and the new changelog offset atomically, without the WAL (not durable yet)."""
        ...

    def request_restore_flush(self) -> None:
        """Starts making the restored batches durable without waiting; ``restore_flushed`` says when done."""
        ...

    def restore_flushed(self) -> bool:
        """True once everything ``write_restore_batch`` wrote before the last ``request_restore_flush`` is
        durable, data before its offset (True at once when there is nothing to flush)."""
        ...

    def end_restore(self) -> None:
        """Make every restored batch durable and switch back to processing settings."""
        ...

    def open_from_files(self, directory: str) -> None:
        """Adopt ``directory``, a copy of this kind of store's files (a RocksDB checkpoint, downloaded), as the
        store's whole content, including the changelog offset stored in it. The directory is consumed.
        Checked before anything of the store changes: on a failure of that check the store is as it was;
        a failure after the swap leaves the store empty (``reset``). A backend without files (in memory)
        raises NotImplementedError."""
        ...

    def reset(self) -> None:
        """Drop all state, data and offset: the store stays open, empty (``changelog_offset()`` is None)."""
        ...


class StoreBackend(RestoreTarget, Protocol):
    # A read found the store's files damaged (it raised StoreCorruptedError): wipe it and restore.
    corrupted: bool
    # Snapshots (issue #9): True if ``checkpoint`` can copy the store's files; False for a store without
    # files (in memory), which is never snapshotted.
    supports_checkpoint: bool

    def get(self, key: bytes) -> bytes | None:
        """StoreCorruptedError if the store's files are damaged, StoreClosedError once it is closed."""
        ...

    def range(self, lo: bytes | None, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Keys in [lo, hi] (inclusive, either end open when None), in byte order."""
        ...

    def restore(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        """Like write, tuned for bulk restore (no WAL). ``end_restore`` makes it durable."""
        ...

    def approximate_num_entries(self) -> int: ...

    def close(self) -> None: ...

    def wipe(self) -> None:
        """Delete all state (the store is unusable until reopened)."""
        ...

    def checkpoint(self, into: str) -> bool:
        """Copies the store's files into the new directory ``into`` (hard links where possible; its parent is
        created): exactly the state and changelog offset of the last ``write``; True. Or, when much written
        data is still only in memory (writing it to files is what makes a checkpoint slow), starts writing it in
        the background and returns False, creating nothing: call again later (after the next write or not).
        Call it on the thread that writes the store, between writes. NotImplementedError if
        ``supports_checkpoint`` is False."""
        ...


class WindowBackend(StoreBackend, Protocol):
    """A windowed store's backend (state/window_store.py has the key and value bytes). Everything of
    ``StoreBackend`` holds, with these additions:

    - Stream time: the largest event time (the 8-byte prefix of a value) it was ever written, by ``write`` or
      by a restore batch; kept with the changelog offset, in the same atomic write (None: nothing written).
    - Expiry: a window whose start is at or below ``stream_time() - retention_ms`` is expired. A write or a
      restore batch never adds an expired window, and the backend purges expired windows after each write
      (local only: the changelog's own retention deletes its records).
    """

    retention_ms: int

    def stream_time(self) -> int | None: ...

    def windows_between(self, from_ms: int, to_ms: int) -> Iterator[tuple[bytes, bytes]]:
        """(store key, store value) of every window whose start is in [from_ms, to_ms] (expired ones not yet
        purged included), ordered by (start, key bytes); reads only those windows. StoreClosedError once closed."""
        ...


class ListRestoreBatch:
    """A restore batch for backends without a native one: collects entries for ``restore``."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: list[Entry] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.entries.append((key, value))

    def delete(self, key: bytes) -> None:
        self.entries.append((key, None))


class SimpleRestoreTarget:
    """The bulk-write half of ``RestoreTarget`` for a backend whose bulk path is ``restore(entries, offset)``
    and whose ``end_restore`` makes it durable: no bulk-load settings, batches are lists of entries, and the
    asynchronous flush is done at once (``request_restore_flush`` calls ``end_restore``)."""

    def restore(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        raise NotImplementedError

    def end_restore(self) -> None:
        raise NotImplementedError

    def begin_restore(self, records: int) -> None:
        pass

    def restore_batch(self) -> ListRestoreBatch:
        return ListRestoreBatch()

    def write_restore_batch(self, batch: ListRestoreBatch, changelog_offset: int) -> None:
        self.restore(batch.entries, changelog_offset)

    def request_restore_flush(self) -> None:
        self.end_restore()

    def restore_flushed(self) -> bool:
        return True


def check_offset_forward(store: str, current: int | None, new: int) -> None:
    """An always-on check: the in-store changelog offset never moves backwards."""
    if current is not None and new < current:
        raise RuntimeError(
            f"store {store}: changelog offset would move backwards from {current} to {new}; refusing the write"
        )


# ---- the registry: StoreSpec.kind -> backend ----

# (store name, path of its directory, on_corruption(message), **options) -> an open backend. A kind that is not
# persistent gets no path (None) and never reports corruption. Options: ``retention_ms=`` for windowed kinds.
BackendFactory = Callable[..., StoreBackend]


@dataclass(frozen=True)
class BackendKind:
    """How to open the stores of one ``StoreSpec.kind``. ``persistent``: the store lives in its own directory
    under the state dir (``state_dir/app_id/<task>/<store>``) and keeps its state and changelog offset there
    across restarts; otherwise it starts empty in every incarnation of its task."""

    kind: str
    persistent: bool
    open: BackendFactory
    windowed: bool = False  # its backends are WindowBackends; opened with retention_ms=
    sessions: bool = False  # (windowed) its keys are sessions (state/session_store.py), not windows


_KINDS: dict[str, BackendKind] = {}


def register_backend(kind: BackendKind) -> None:
    """Make ``StoreSpec(kind=kind.kind)`` valid and opened by ``kind.open``; a kind registered again is
    replaced."""
    _KINDS[kind.kind] = kind


def backend_kind(kind: str) -> BackendKind:
    """KeyError for a kind nobody registered (``StoreSpec`` refuses those with a ConfigError)."""
    return _KINDS[kind]


def backend_kinds() -> list[str]:
    return sorted(_KINDS)


def _open_rocksdb(name: str, path: str | None, on_corruption: Callable[[str], None] | None) -> StoreBackend:
    from .rocksdb_store import RocksDBBackend  # imported here: rocksdb_store imports this module
    assert path is not None
    return RocksDBBackend(name, path, on_corruption=on_corruption)


def _open_memory(name: str, path: str | None, on_corruption: Callable[[str], None] | None) -> StoreBackend:
    from .memory_store import MemoryBackend
    return MemoryBackend(name)


def _open_window_rocksdb(name: str, path: str | None, on_corruption: Callable[[str], None] | None,
                         retention_ms: int) -> StoreBackend:
    from .window_rocksdb import WindowRocksDBBackend
    assert path is not None
    return WindowRocksDBBackend(name, path, retention_ms, on_corruption=on_corruption)


def _open_window_memory(name: str, path: str | None, on_corruption: Callable[[str], None] | None,
                        retention_ms: int) -> StoreBackend:
    from .window_memory import WindowMemoryBackend
    return WindowMemoryBackend(name, retention_ms)


def _open_session_rocksdb(name: str, path: str | None, on_corruption: Callable[[str], None] | None,
                          retention_ms: int) -> StoreBackend:
    from .window_rocksdb import SessionRocksDBBackend
    assert path is not None
    return SessionRocksDBBackend(name, path, retention_ms, on_corruption=on_corruption)


register_backend(BackendKind(ROCKSDB, persistent=True, open=_open_rocksdb))
register_backend(BackendKind(MEMORY, persistent=False, open=_open_memory))
register_backend(BackendKind(WINDOW_ROCKSDB, persistent=True, open=_open_window_rocksdb, windowed=True))
register_backend(BackendKind(WINDOW_MEMORY, persistent=False, open=_open_window_memory, windowed=True))
register_backend(BackendKind(SESSION_ROCKSDB, persistent=True, open=_open_session_rocksdb, windowed=True,
                             sessions=True))
register_backend(BackendKind(SESSION_MEMORY, persistent=False, open=_open_window_memory, windowed=True,
                             sessions=True))
