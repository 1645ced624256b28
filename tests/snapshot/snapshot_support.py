"""Helpers of the snapshot tests: RocksDB stores with data, checkpoints, requests. The moto server and the
``store_url`` fixture are in tests/snapshot_store_helpers.py (shared with the integration tests)."""
from __future__ import annotations

from pathlib import Path

from rocksdict import Options, Rdict

from hotstate.snapshot import SnapshotRequest, take_checkpoint


def open_db(path: Path) -> Rdict:
    return Rdict(str(path), Options(raw_mode=True))


def write_keys(db: Rdict, start: int, count: int, value_bytes: int = 100, tag: bytes = b"v") -> None:
    pad = b"." * max(0, value_bytes - 16)
    for i in range(start, start + count):
        db[b"key-%09d" % i] = tag + b"-%09d" % i + pad


def contents(db: Rdict) -> dict[bytes, bytes]:
    return {k: v for k, v in db.items()}


def request(cp_dir: Path, offset: int, epoch: int = 1, store: str = "counts", partition: int = 0) -> SnapshotRequest:
    return SnapshotRequest(store, f"0_{partition}", f"app-{store}-changelog", partition, offset, epoch, cp_dir)


def checkpoint(db: Rdict, root: Path, name: str) -> Path:
    return take_checkpoint(db, root / name).path


def corrupt(path_or_store, name: str, how: str) -> None:
    """Truncates or flips one bit of an object, through the store itself."""
    data = bytearray(path_or_store.get_bytes(name))
    if how == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 3] ^= 0x01
    path_or_store.put_bytes(name, bytes(data))
