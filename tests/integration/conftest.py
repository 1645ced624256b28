"""Fixtures for tests against the real broker from ``scripts/kafka``: ``bootstrap`` (session; starts the
broker, fails loudly if it cannot), ``admin``, ``kafka`` (topics / produce / read / watermarks, cleaned up
after the test) and ``tmp_state_dir``. They live in tests/kafka_helpers.py, shared by integration and chaos.
``moto`` and ``store_url`` (snapshot stores: a directory and a moto S3 server): tests/snapshot_store_helpers.py."""
from __future__ import annotations

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from kafka_helpers import admin, bootstrap, kafka, tmp_state_dir  # noqa: E402,F401
from snapshot_store_helpers import moto, objects, store_url  # noqa: E402,F401
