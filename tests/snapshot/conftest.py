"""Fixtures of the snapshot tests: a real S3-compatible server (``moto_server`` from moto[server]) on a free
loopback port, started once as its own process and stopped at the end; ``store_url`` runs a test against
both a ``file://`` directory and that server (a fresh prefix per test)."""
from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from snapshot_support import MotoServer, free_port  # noqa: E402

# Test credentials for moto (it accepts any); set before any S3 store is built. obstore reads them from the
# environment, as hotstate's users do.
TEST_KEY_ID = "AKIAHOTSTATETESTKEY0"
TEST_SECRET = "hotstate-test-secret-" + uuid.uuid4().hex


@pytest.fixture(scope="session")
def moto():
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID=TEST_KEY_ID, AWS_SECRET_ACCESS_KEY=TEST_SECRET, AWS_DEFAULT_REGION="us-east-1")
    server = MotoServer(free_port())
    server.start()
    server.create_bucket("hotstate-snapshots")
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
    return f"s3://hotstate-snapshots/{uuid.uuid4().hex}", server.options()
