"""A RocksDB checkpoint of an open store: the files that hold exactly its state at this moment.

RocksDB's checkpoint flushes the memtables, hard-links the live SST files into a new directory and copies
the small ones (MANIFEST-*, CURRENT, OPTIONS-*). Taken at a commit boundary (after the store's atomic write
of data + changelog offset), the checkpoint holds exactly the state at the store's stored changelog offset.
Cost: a flush of the memtable plus one link per SST file (measured in docs/architecture.md, "Snapshots").
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from rocksdict import Checkpoint, Rdict


@dataclass(frozen=True)
class CheckpointTaken:
    path: Path
    seconds: float
    files: int
    num_bytes: int


def take_checkpoint(db: Rdict, into: Path) -> CheckpointTaken:
    """Checkpoints the open ``db`` into the directory ``into``, which must not exist yet (its parent is
    created). Must run on the thread that writes ``db``, between two writes (RocksDB allows concurrent
    writes, but then the files hold a state between two commits). On failure nothing is left at ``into``."""
    into = Path(into)
    if into.exists():
        raise FileExistsError(f"checkpoint directory {into} exists already; give a new path")
    into.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        Checkpoint(db).create_checkpoint(str(into))
    except BaseException:
        shutil.rmtree(into, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    entries = [e for e in os.scandir(into) if e.is_file()]
    return CheckpointTaken(into, seconds, len(entries), sum(e.stat().st_size for e in entries))


def remove_checkpoints(root: Path) -> int:
    """Deletes every checkpoint directory under ``root`` (left by a process that died before its uploader
    finished); returns how many. Call it at start, before any snapshot is taken."""
    root = Path(root)
    if not root.is_dir():
        return 0
    removed = 0
    for entry in root.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed
