"""Fixtures for the unit tests (no broker)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:  # helpers shared with the integration tests (window_reference.py)
    sys.path.insert(0, _TESTS)

import hotstate
from hotstate.state.memory_store import MemoryBackend
from hotstate.state.rocksdb_store import RocksDBBackend


@pytest.fixture
def make_app(tmp_path) -> Callable[..., hotstate.App]:
    def make(**overrides: Any) -> hotstate.App:
        cfg = dict(app_id="unit-app", bootstrap_servers="127.0.0.1:1", state_dir=str(tmp_path / "state"))
        cfg.update(overrides)
        return hotstate.App(**cfg)
    return make


@pytest.fixture(params=["memory", "rocksdb"])
def backend(request, tmp_path):
    """Each backend test runs against both stores."""
    b = MemoryBackend("s") if request.param == "memory" else RocksDBBackend("s", str(tmp_path / "db"))
    yield b
    b.close()


@pytest.fixture
def closing():
    """A list of tasks the test opened; their stores' backends are closed at the end."""
    tasks = []
    yield tasks
    for t in tasks:
        for s in t.stores.values():
            s.backend.close()
