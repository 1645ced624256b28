"""Helpers of the snapshot tests: the moto server process, RocksDB stores with data, checkpoints."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from rocksdict import Options, Rdict

from hotstate.snapshot import SnapshotRequest, take_checkpoint


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``moto_server`` as its own process on 127.0.0.1:port."""

    def __init__(self, port: int):
        self.port = port
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def options(self) -> dict:
        return {"endpoint": self.endpoint, "region": "us-east-1", "allow_http": True}

    def start(self, timeout_s: float = 30.0) -> None:
        exe = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto_server did not listen on port {self.port} within {timeout_s} s")

    def create_bucket(self, name: str) -> None:
        req = urllib.request.Request(f"{self.endpoint}/{name}", method="PUT")
        urllib.request.urlopen(req, timeout=10).close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


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
