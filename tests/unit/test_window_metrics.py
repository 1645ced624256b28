"""The windows' metrics: late drops per task and skipped restore offsets, in App.metrics()'s snapshot and on the
Prometheus endpoint."""
from __future__ import annotations

import urllib.request

from hotstate.observe.metrics import Metrics, StoreRestoreMetrics
from hotstate.observe.prometheus import MetricsServer


def test_late_drops_and_skipped_restore_offsets_in_the_snapshot_and_on_the_endpoint():
    m = Metrics()
    for _ in range(3):
        m.record_late_drop("0_1")
    m.record_late_drop("0_2")
    m.restore_skipped_records_total = 900
    m.restores["0_1/per-minute"] = StoreRestoreMetrics(restore_skipped_records_total=900, changelog="app-pm-changelog[1]")
    snap = m.snapshot()
    assert snap["dropped_late_records_total"] == {"0_1": 3, "0_2": 1}
    assert snap["restore_skipped_records_total"] == 900
    assert snap["restores"]["0_1/per-minute"]["restore_skipped_records_total"] == 900
    server = MetricsServer("app", m.snapshot, 0, host="127.0.0.1")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    finally:
        server.close()
    assert 'hotstate_task_dropped_late_records_total{app_id="app",task="0_1"} 3.0' in text
    assert 'hotstate_task_dropped_late_records_total{app_id="app",task="0_2"} 1.0' in text
    assert 'hotstate_restore_skipped_records_total{app_id="app"} 900.0' in text
    labels = 'app_id="app",changelog="app-pm-changelog[1]",store="per-minute",task="0_1"'
    assert f"hotstate_store_restore_skipped_records_total{{{labels}}} 900.0" in text
