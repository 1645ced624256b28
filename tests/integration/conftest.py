"""Fixtures for tests against the real broker started by ``scripts/kafka`` (shared with tests/chaos)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the shared kafka_helpers module

from kafka_helpers import Kafka, start_broker  # noqa: E402


@pytest.fixture(scope="session")
def bootstrap() -> str:
    """Starts the local broker if none runs (``scripts/kafka start``, honouring HOTSTATE_KAFKA_PORT) and
    returns its bootstrap address. A broker that cannot start fails the tests; nothing is skipped."""
    try:
        return start_broker()
    except Exception as exc:
        pytest.fail(f"the local Kafka broker could not be started: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


@pytest.fixture
def kafka(bootstrap: str, admin: AdminClient):
    """Topic / produce / read helpers; deletes the topics and groups the test made."""
    k = Kafka(bootstrap, admin)
    yield k
    k.cleanup()


@pytest.fixture
def tmp_state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir()
    return path
