"""Fixtures of the snapshot tests: ``moto`` (a real S3-compatible server, its own process on loopback) and
``store_url`` (each test against a ``file://`` directory and that server); they live in
tests/snapshot_store_helpers.py, shared with the integration tests."""
from __future__ import annotations

import sys
from pathlib import Path

for _path in (Path(__file__).resolve().parent, Path(__file__).resolve().parents[1]):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from snapshot_store_helpers import moto, objects, store_url  # noqa: E402,F401
