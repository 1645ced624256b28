"""The byte-level store a task writes to, and what every backend must guarantee.

A backend holds key/value bytes plus one number: the changelog offset it is consistent with
(``changelog_offset``: every changelog record below it is applied, none at or above it). Data and
that offset always change together, in one atomic write. There is no checkpoint file.
"""
from __future__ import annotations

import struct
from typing import Iterable, Iterator, Protocol

OFFSET = struct.Struct(">q")

# One entry of a write: value None deletes the key.
Entry = tuple[bytes, "bytes | None"]


class StoreBackend(Protocol):
    name: str
    persistent: bool
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

    def changelog_offset(self) -> int | None:
        """The next changelog offset to apply, or None if the store holds no state."""
        ...

    def write(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        """Apply entries and set changelog_offset in one atomic, durable (WAL) write.

        Offsets never go backwards: a smaller changelog_offset than the stored one is a bug and raises."""
        ...

    def restore(self, entries: Iterable[Entry], changelog_offset: int) -> None:
        """Like write, tuned for bulk restore (no WAL). ``end_restore`` makes it durable."""
        ...

    def end_restore(self) -> None:
        """Make every restored batch durable and switch back to processing settings."""
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


def check_offset_forward(store: str, current: int | None, new: int) -> None:
    """An always-on check: the in-store changelog offset never moves backwards."""
    if current is not None and new < current:
        raise RuntimeError(
            f"store {store}: changelog offset would move backwards from {current} to {new}; refusing the write"
        )
