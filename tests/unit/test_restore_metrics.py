"""Restore metrics in Kafka Streams' vocabulary, their Prometheus exposition and the progress display."""
from __future__ import annotations

import io
import urllib.request

import pytest
from rich.console import Console

from hotstate.config import Config
from hotstate.errors import ConfigError
from hotstate.observe import metrics as metrics_mod
from hotstate.observe.metrics import Metrics, RateWindow, StoreRestoreMetrics
from hotstate.observe.progress import RestoreProgress
from hotstate.observe.prometheus import MetricsServer
from test_state_updater import CHANGELOG, FakeRestoreConsumer, changelog_records, make_task, make_updater


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_rate_window_measures_recent_growth_and_decays():
    clock = Clock()
    w = RateWindow(clock)
    assert w.rate(0) == 0.0
    for total in range(0, 1001, 100):  # 100 records every second for 10 s
        w.sample(total)
        clock.now += 1
    assert w.rate(1000) == pytest.approx(100, rel=0.15)
    clock.now += metrics_mod.RATE_WINDOW_S + 1  # nothing since: the samples leave the window
    assert w.rate(1000) == 0.0


def test_store_snapshot_has_eta_from_its_rate(monkeypatch):
    clock = Clock()
    m = StoreRestoreMetrics(restore_remaining_records=1000, started_at_s=clock.now, changelog="cl[0]",
                            rate=RateWindow(clock))
    assert m.snapshot()["restore_eta_s"] is None  # no rate yet
    m.rate.sample(0)
    clock.now += 2
    m.restore_records_total, m.restore_remaining_records = 400, 600
    m.rate.sample(400)
    snap = m.snapshot()
    assert snap["restore_records_rate"] == 200.0 and snap["restore_eta_s"] == 3.0
    assert snap["state"] == "RESTORING" and snap["changelog"] == "cl[0]"
    m.ended_at_s = clock.now
    assert m.snapshot()["state"] == "RESTORED" and m.snapshot()["restore_eta_s"] == 0.0


def test_updater_publishes_instance_and_store_metrics(tmp_path):
    task = make_task("memory", tmp_path)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer, restore_consume_records_max=2)
    u._reader.start_actives([task])
    snap = u._metrics.snapshot()
    assert snap["active_restoring_tasks"] == 1 and snap["standby_updating_tasks"] == 0
    assert snap["restores"]["0_0/counts"]["restore_remaining_records"] == 5
    assert snap["restores"]["0_0/counts"]["changelog"] == str(CHANGELOG)
    u._reader.restore_round()
    snap = u._metrics.snapshot()
    assert snap["restores"]["0_0/counts"]["restore_records_total"] == 2
    assert snap["restores"]["0_0/counts"]["restore_remaining_records"] == 3
    while u._reader.partitions():
        u._reader.restore_round()
    snap = u._metrics.snapshot()
    assert snap["active_restoring_tasks"] == 0 and snap["active_restoring_stores"] == 0
    assert snap["restores"]["0_0/counts"]["state"] == "RESTORED"
    assert snap["restore_records_total"] == 5


def test_removed_task_leaves_no_store_metrics(tmp_path):
    from concurrent.futures import Future
    task = make_task("memory", tmp_path)
    consumer = FakeRestoreConsumer({CHANGELOG: (0, 5)}, {CHANGELOG: changelog_records(5)})
    u = make_updater(consumer, restore_consume_records_max=2)
    u._reader.start_actives([task])
    u._remove_task(task.id, Future())
    snap = u._metrics.snapshot()
    assert snap["restores"] == {} and snap["active_restoring_tasks"] == 0


def test_prometheus_endpoint_serves_the_snapshot():
    m = Metrics()
    m.restore_records_total = 7
    m.active_restoring_tasks = 2
    m.restores["0_3/counts"] = StoreRestoreMetrics(7, 93, changelog="app-counts-changelog[3]")
    server = MetricsServer("app", m.snapshot, 0, host="127.0.0.1")
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5).read().decode()
    finally:
        server.close()
    assert 'hotstate_restore_records_total{app_id="app"} 7.0' in text
    assert 'hotstate_active_restoring_tasks{app_id="app"} 2.0' in text
    assert 'hotstate_active_restore_ratio{app_id="app"}' in text
    assert ('hotstate_store_restore_remaining_records{app_id="app",changelog="app-counts-changelog[3]",'
            'store="counts",task="0_3"} 93.0') in text


def test_metrics_port_is_validated():
    base = dict(app_id="a", bootstrap_servers="127.0.0.1:1")
    assert Config.from_kwargs(**base, metrics_port=9464).metrics_port == 9464
    for bad in (-1, 70000, "9464", True):
        with pytest.raises(ConfigError, match="metrics_port"):
            Config.from_kwargs(**base, metrics_port=bad)


def test_progress_draws_records_rate_and_eta():
    m = Metrics()
    m.restores["0_0/counts"] = StoreRestoreMetrics(250_000, 750_000, changelog="c[0]")
    m.restores["0_1/counts"] = StoreRestoreMetrics(10, 0, ended_at_s=1.0, changelog="c[1]")

    class App:
        def metrics(self):
            return m.snapshot()

    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False)
    with RestoreProgress(App(), console=console, refresh_s=0.05):
        pass
    text = out.getvalue()
    assert "0_0/counts" in text and "250,000/1,000,000" in text and "25%" in text
    assert "0_1/counts" in text and "done" in text
    assert "all stores" in text


def test_progress_shows_download_bytes_then_the_tail_records():
    m = Metrics()

    class App:
        def metrics(self):
            return m.snapshot()

    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=False)
    progress = RestoreProgress(App(), console=console, refresh_s=60)
    progress.update()
    m.snapshots.add_downloaded(12_345_678)  # a snapshot downloaded, then the tail replayed
    m.restores["0_0/counts"] = StoreRestoreMetrics(1_000, 4_000, changelog="c[0]")
    with progress:
        pass
    text = out.getvalue()
    assert "snapshot download" in text and "12.3 MB downloaded" in text and "/s" in text
    assert "1,000/5,000 records" in text and "rec/s" in text
    assert text.index("snapshot download") < text.index("0_0/counts")


def test_progress_has_no_download_line_without_a_download():
    m = Metrics()
    m.restores["0_0/counts"] = StoreRestoreMetrics(10, 0, ended_at_s=1.0, changelog="c[0]")

    class App:
        def metrics(self):
            return m.snapshot()

    out = io.StringIO()
    with RestoreProgress(App(), console=Console(file=out, width=160, force_terminal=False), refresh_s=60):
        pass
    assert "snapshot download" not in out.getvalue() and "10/10 records" in out.getvalue()
