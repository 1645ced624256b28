"""RestorerSource, the changelog reader's snapshot source: the acceptable_recovery_lag rule, a store that
cannot be opened (no download, a warning, tried again on a later fetch) and the staging directory."""
from __future__ import annotations

import logging

from rocksdict import Options, Rdict

from hotstate.config import Config
from hotstate.observe.metrics import SnapshotMetrics
from hotstate.records import TopicPartition
from hotstate.runtime.snapshot_source import RestorerSource, prepare_staging_dir
from hotstate.snapshot import ObjectStore, Outcome, SnapshotRequest, Snapshotter, take_checkpoint

APP = "app"
TP = TopicPartition("app-counts-changelog", 0)


def publish(tmp_path, url: str, offset: int) -> None:
    db = Rdict(str(tmp_path / "db"), Options(raw_mode=True))
    try:
        for i in range(1000):
            db[b"k%05d" % i] = b"v" * 50
        cp = take_checkpoint(db, tmp_path / "cp").path
    finally:
        db.close()
    s = Snapshotter(ObjectStore.open(url), APP, instance_id="unit")
    s.start()
    try:
        s.submit(SnapshotRequest("counts", "0_0", TP.topic, 0, offset, 1, cp))
        assert s.wait_idle(30)
        [result] = s.drain_results()
    finally:
        s.close()
    assert result.outcome is Outcome.PUBLISHED


def source(url: str, lag: int = 10) -> tuple[RestorerSource, SnapshotMetrics]:
    cfg = Config.from_kwargs(app_id=APP, bootstrap_servers="127.0.0.1:1", snapshot_store=url,
                             acceptable_recovery_lag=lag)
    metrics = SnapshotMetrics()
    return RestorerSource(cfg, metrics), metrics


def test_downloads_only_without_local_state_or_beyond_the_recovery_lag(tmp_path):
    url = f"file://{tmp_path / 'snapshots'}"
    publish(tmp_path, url, offset=1000)
    src, metrics = source(url, lag=10)
    staging = tmp_path / "staging"
    staging.mkdir()

    got = src.fetch("counts", TP, None, staging / "a")  # no local state
    assert got is not None and (got.offset, got.num_bytes) == (1000, metrics.restore_download_bytes_total)
    assert got.num_bytes == sum(p.stat().st_size for p in (staging / "a").iterdir()) > 0
    assert src.fetch("counts", TP, 990, staging / "b") is None  # exactly the lag behind: not worth it
    assert src.fetch("counts", TP, 995, staging / "c") is None
    assert src.fetch("counts", TP, 989, staging / "d").offset == 1000  # more than the lag behind
    assert src.fetch("other-store", TP, None, staging / "e") is None  # nothing published for it


def test_a_store_that_cannot_be_opened_gives_no_snapshot_and_is_tried_again(tmp_path, caplog):
    url = f"file://{tmp_path / 'not-yet'}"
    src, _ = source(url)
    with caplog.at_level(logging.WARNING, logger="hotstate"):
        assert src.fetch("counts", TP, None, tmp_path / "a") is None
    assert "cannot be opened" in caplog.text and "restores read the changelog" in caplog.text
    assert not (tmp_path / "not-yet").exists(), "a restore must not create the store's directory"
    publish(tmp_path, url, offset=500)  # the store appears (e.g. a volume is mounted)
    assert src.fetch("counts", TP, None, tmp_path / "b").offset == 500


def test_the_staging_directory_is_emptied_at_start(tmp_path):
    left = tmp_path / ".snapshot-staging" / ".snapshot-counts-0-x"
    left.mkdir(parents=True)
    (left / "000007.sst").write_bytes(b"partial")
    path = prepare_staging_dir(str(tmp_path))
    assert path == str(tmp_path / ".snapshot-staging")
    assert list((tmp_path / ".snapshot-staging").iterdir()) == []
