"""An object store that is not there (nothing listens on its endpoint): snapshots are retried with backoff,
the error is logged once per interval, nothing reaches the caller, and no credential is ever printed. Once
a server listens there, the pending snapshot goes through."""
from __future__ import annotations

import logging
import time

import pytest

from hotstate.errors import SnapshotStoreError
from hotstate.snapshot import ObjectStore, Outcome, Restorer, Snapshotter, take_checkpoint
from snapshot_store_helpers import MotoServer, free_port
from snapshot_support import open_db, request, write_keys

SECRET = "unreachable-test-secret-8c1f0e2a9b"


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNREACHABLE00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRET + "-token")


def test_unreachable_store_retries_with_backoff_logs_once_then_recovers(secret_env, tmp_path, caplog):
    port = free_port()
    options = {"endpoint": f"http://127.0.0.1:{port}", "region": "us-east-1", "allow_http": True}
    objects = ObjectStore.open("s3://hotstate-down/snaps", options)
    db = open_db(tmp_path / "db")
    write_keys(db, 0, 1000)
    s = Snapshotter(objects, "app", backoff_initial_s=0.05, backoff_max_s=0.4, error_log_every_s=60)
    s.start()
    server = None
    try:
        with caplog.at_level(logging.INFO, "hotstate.snapshot"):
            started = time.monotonic()
            s.submit(request(take_checkpoint(db, tmp_path / "cp").path, offset=10))
            assert time.monotonic() - started < 0.1, "submit only queues"
            deadline = time.monotonic() + 30
            while s.metrics.partition("0_0/counts", "").snapshot_failures_total < 4:
                assert time.monotonic() < deadline, "the snapshot was not retried"
                time.sleep(0.05)
            assert s.drain_results() == [], "still pending: not dropped, not published"
            failures = [r for r in caplog.records if r.levelno == logging.WARNING and "retrying" in r.getMessage()]
            assert len(failures) == 1, "one warning per interval, however many retries"
            assert "127.0.0.1" in failures[0].getMessage() or "hotstate-down" in failures[0].getMessage()

            server = MotoServer(port)
            server.start()
            server.create_bucket("hotstate-down")
            deadline = time.monotonic() + 30
            results = []
            while not results:
                assert time.monotonic() < deadline, "the snapshot did not go through once the store was back"
                results = s.drain_results()
                time.sleep(0.05)
        assert [r.outcome for r in results] == [Outcome.PUBLISHED]
        assert results[0].attempts >= 5
        assert "works again" in caplog.text
        assert not (tmp_path / "cp").exists()
    finally:
        s.close()
        db.close()
        if server is not None:
            server.stop()
    assert SECRET not in caplog.text


def test_restore_from_an_unreachable_store_falls_back_without_raising(secret_env, tmp_path, caplog):
    options = {"endpoint": f"http://127.0.0.1:{free_port()}", "region": "us-east-1", "allow_http": True}
    objects = ObjectStore.open("s3://hotstate-down/snaps", options)
    with caplog.at_level(logging.WARNING, "hotstate.snapshot"):
        assert Restorer(objects, "app").fetch("counts", 0, None, tmp_path / "restored") is None
    assert "restoring from the changelog" in caplog.text
    assert not (tmp_path / "restored").exists()
    assert SECRET not in caplog.text


def test_errors_never_print_credentials(secret_env, tmp_path):
    endpoint = f"http://someone:{SECRET}@127.0.0.1:{free_port()}"
    objects = ObjectStore.open("s3://hotstate-down/snaps", {"endpoint": endpoint, "allow_http": True})
    assert SECRET not in repr(objects)
    for call in (lambda: objects.put_bytes("a", b"x"), lambda: objects.list("a/"),
                 lambda: objects.get_bytes("a"), lambda: objects.create("a", b"x")):
        with pytest.raises(SnapshotStoreError) as info:
            call()
        text = str(info.value)
        assert SECRET not in text and "snapshot store s3://hotstate-down/snaps" in text
        assert "reachable" in text, "says what to check"
        assert info.value.__cause__ is None and info.value.__suppress_context__
