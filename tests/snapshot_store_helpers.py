"""A real S3-compatible server for tests: ``moto_server`` (from moto[server]) as its own process on a free
loopback port, and the fixtures ``moto`` (session: started once, stopped at the end) and ``store_url`` (each
test runs against a ``file://`` directory and a fresh prefix on that server). moto honours conditional
create (If-None-Match: *), so fencing is tested against it. Shared by tests/snapshot and tests/integration
(their conftest.py import the fixtures)."""
from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

BUCKET = "hotstate-snapshots"
# Test credentials for moto (it accepts any); set before any S3 store is built. obstore reads them from the
# environment, as hotstate's users do.
TEST_KEY_ID = "AKIAHOTSTATETESTKEY0"
TEST_SECRET = "hotstate-test-secret-" + uuid.uuid4().hex


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


@pytest.fixture(scope="session")
def moto():
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID=TEST_KEY_ID, AWS_SECRET_ACCESS_KEY=TEST_SECRET, AWS_DEFAULT_REGION="us-east-1")
    server = MotoServer(free_port())
    server.start()
    server.create_bucket(BUCKET)
    try:
        yield server
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(params=["file", "s3"])
def store_url(request, tmp_path):
    """(url, options) of an empty snapshot store: a directory, or a fresh prefix on the moto server."""
    if request.param == "file":
        return f"file://{tmp_path / 'snapshots'}", {}
    server = request.getfixturevalue("moto")
    return f"s3://{BUCKET}/{uuid.uuid4().hex}", server.options()


# ---------------------------------------------------------------------------------------------------------
# Checks of what an app published (the integration and chaos tests).

@pytest.fixture
def objects(store_url):
    """The ObjectStore of ``store_url``."""
    from hotstate.snapshot import ObjectStore

    url, options = store_url
    return ObjectStore.open(url, options)


def listings(objects, app_id: str, store: str, partitions: int) -> dict:
    """partition -> PartitionListing (manifests newest first) of one store of an app."""
    from hotstate.snapshot import Catalog, PartitionPaths

    catalog = Catalog(objects)
    return {p: catalog.list_partition(PartitionPaths(app_id, store, p)) for p in range(partitions)}


def check_manifests_whole(objects, app_id: str, store: str, partitions: int) -> dict:
    """Every manifest is readable and every object it names is there with its size; returns the listings
    (without the manifests a running app's GC deleted between the list and the read)."""
    found = listings(objects, app_id, store, partitions)
    for p, listing in found.items():
        gone = {ref.name for ref in listing.manifests if ref.manifest is None and objects.head(ref.name) is None}
        if gone:
            found[p] = listing = dataclasses.replace(listing, manifests=tuple(
                ref for ref in listing.manifests if ref.name not in gone))
        for ref in listing.manifests:
            assert ref.manifest is not None, f"{ref.name} is unusable: {ref.problem}"
            for f in ref.manifest.files:
                info = listing.files.get(f.object)
                assert info is not None, f"{ref.name} names {f.object}, which is missing"
                assert info.size == f.size, f"{f.object} is {info.size} bytes, {ref.name} says {f.size}"
    return found


def open_snapshot(path) -> tuple[int | None, dict[bytes, bytes]]:
    """(changelog offset, key -> value) of a downloaded hotstate RocksDB snapshot, opened with rocksdict."""
    import struct

    from rocksdict import AccessType, Options, Rdict

    from hotstate.state.rocksdb_store import META_CF

    db = Rdict(str(path), Options(raw_mode=True), column_families={META_CF: Options(raw_mode=True)},
               access_type=AccessType.read_only())
    meta = db.get_column_family(META_CF)
    try:
        raw = meta.get(b"changelog_offset")
        data = {k: v for k, v in db.items()}
    finally:
        meta.close()
        db.close()
    return (None if raw is None else struct.unpack(">q", raw)[0]), data
