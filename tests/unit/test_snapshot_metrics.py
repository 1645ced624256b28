"""Snapshot metrics: the uploader's and restorer's counters appear in App.metrics()'s snapshot and on the
Prometheus endpoint, per store partition and per instance."""
from __future__ import annotations

import urllib.request

from hotstate.observe.metrics import Metrics
from hotstate.observe.prometheus import MetricsServer


def test_snapshot_metrics_in_the_snapshot_and_on_the_endpoint():
    m = Metrics()
    part = m.snapshots.partition("0_3/counts", "app-counts-changelog[3]")
    part.snapshots_total, part.snapshot_upload_bytes_total, part.snapshot_last_offset = 2, 4096, 1234
    part.snapshot_last_created_s = 1000.0
    m.snapshots.partition("0_4/counts", "app-counts-changelog[4]")  # nothing published yet
    m.snapshots.add_checkpoint(0.004)
    m.snapshots.add_checkpoint(0.001)
    m.snapshots.add_downloaded(300)
    m.snapshots.add_downloaded(200)
    snap = m.snapshot()
    assert (snap["snapshots_total"], snap["snapshot_upload_bytes_total"], snap["restore_download_bytes_total"]) == (2, 4096, 500)
    assert m.snapshots.snapshot(now_s=1010.5)["snapshots"]["0_3/counts"]["snapshot_age_seconds"] == 10.5
    assert snap["snapshots"]["0_4/counts"]["snapshot_age_seconds"] is None
    assert (snap["snapshot_checkpoints_total"], snap["snapshot_checkpoint_seconds_total"],
            snap["snapshot_checkpoint_seconds_max"]) == (2, 0.005, 0.004)
    server = MetricsServer("app", m.snapshot, 0, host="127.0.0.1")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    finally:
        server.close()
    labels = 'app_id="app",changelog="app-counts-changelog[3]",store="counts",task="0_3"'
    assert f"hotstate_store_snapshots_total{{{labels}}} 2.0" in text
    assert f"hotstate_store_snapshot_upload_bytes_total{{{labels}}} 4096.0" in text
    assert f"hotstate_store_snapshot_last_offset{{{labels}}} 1234.0" in text
    assert f"hotstate_store_snapshot_age_seconds{{{labels}}}" in text
    assert 'hotstate_store_snapshot_last_offset{app_id="app",changelog="app-counts-changelog[4]"' not in text
    assert 'hotstate_restore_download_bytes_total{app_id="app"} 500.0' in text
    assert 'hotstate_restore_download_rate{app_id="app"}' in text
    assert 'hotstate_snapshot_checkpoints_total{app_id="app"} 2.0' in text
    assert 'hotstate_snapshot_checkpoint_seconds_max{app_id="app"} 0.004' in text
