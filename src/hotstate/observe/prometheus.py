"""Prometheus exposition of ``App.metrics()`` (prometheus-client), started by the app when ``metrics_port``
is set. Every scrape reads a fresh snapshot; nothing is kept twice.

Names: ``hotstate_`` + the snapshot's name; per store partition the labels ``task``, ``store`` and
``changelog``; per task (``hotstate_task_dropped_late_records_total``) the label ``task``. Every series
carries ``app_id``.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

_INSTANCE = [
    # (snapshot key, kind, help)
    ("records_processed_total", "counter", "Input records processed"),
    ("skipped_records_total", "counter", "Undecodable records skipped by log_and_continue"),
    ("dropped_records_total", "counter", "Records an exception handler skipped (undecodable or failed in user code)"),
    ("dead_letter_records_total", "counter", "Records produced to dead_letter_topic"),
    ("commit_total", "counter", "Commits"),
    ("transactional_producers_abandoned_total", "counter",
     "Transactional producers given up inside a call librdkafka never returned from"),
    ("rewinds_to_known_offsets_total", "counter",
     "Rewinds to this instance's own last committed offsets while the group's stayed unreadable"),
    ("restore_records_total", "counter", "Changelog records restored into local stores"),
    ("restore_skipped_records_total", "counter", "Changelog offsets of expired windows a restore seeked past"),
    ("active_restoring_tasks", "gauge", "Active tasks restoring their stores"),
    ("standby_updating_tasks", "gauge", "Standby tasks updating their stores"),
    ("restore_records_rate", "gauge", "Changelog records restored per second (last 10 s)"),
    ("active_restore_ratio", "gauge", "Fraction of time the restore thread spent restoring (last 10 s)"),
    ("restore_download_bytes_total", "counter", "Snapshot bytes downloaded by restores"),
    ("restore_download_rate", "gauge", "Snapshot bytes downloaded per second (last 10 s)"),
    ("snapshots_fenced_total", "counter", "Snapshots not published because a newer owner had published"),
    ("snapshot_checkpoints_total", "counter", "Store checkpoints the stream thread took for snapshots"),
    ("snapshot_checkpoint_seconds_total", "counter", "Time the stream thread spent taking store checkpoints"),
    ("snapshot_checkpoint_seconds_max", "gauge", "Longest store checkpoint the stream thread took"),
]
_SNAPSHOT = [
    ("snapshots_total", "counter", "Snapshots published for this store partition"),
    ("snapshot_upload_bytes_total", "counter", "Bytes uploaded for this store partition's snapshots"),
    ("snapshot_failures_total", "counter", "Snapshot attempts that failed (retried with backoff)"),
    ("snapshot_last_offset", "gauge", "Changelog offset (next to apply) of the newest published snapshot"),
    ("snapshot_age_seconds", "gauge", "Seconds since the newest published snapshot was taken"),
]
_STORE = [
    ("restore_records_total", "counter", "Changelog records restored into this store partition"),
    ("restore_skipped_records_total", "counter", "Changelog offsets of expired windows this restore seeked past"),
    ("restore_remaining_records", "gauge", "Changelog offsets left to restore"),
    ("restore_records_rate", "gauge", "Records restored per second into this store partition (last 10 s)"),
    ("restore_eta_s", "gauge", "Seconds until this store partition is restored, at the current rate"),
]
_PROM_NAMES = {"restore_eta_s": "restore_eta_seconds"}  # Prometheus spells units out


class _SnapshotCollector(Collector):
    def __init__(self, app_id: str, snapshot: Callable[[], dict]):
        self._app_id = app_id
        self._snapshot = snapshot

    def collect(self) -> Iterator:
        snap = self._snapshot()
        for key, kind, doc in _INSTANCE:
            family = _family(kind, f"hotstate_{key}", doc, ["app_id"])
            family.add_metric([self._app_id], float(snap.get(key) or 0))
            yield family
        late = CounterMetricFamily("hotstate_task_dropped_late_records",
                                   "Records a windowed aggregation dropped for a closed window (per window)",
                                   labels=["app_id", "task"])
        for task, n in sorted(snap.get("dropped_late_records_total", {}).items()):
            late.add_metric([self._app_id, task], float(n))
        yield late
        restores = snap.get("restores", {})
        for key, kind, doc in _STORE:
            family = _family(kind, f"hotstate_store_{_PROM_NAMES.get(key, key)}", doc, ["app_id", "task", "store", "changelog"])
            for name, values in restores.items():
                value = values.get(key)
                if value is None:
                    continue  # no ETA without a rate yet
                task, _, store = name.partition("/")
                family.add_metric([self._app_id, task, store, values.get("changelog", "")], float(value))
            yield family
        snapshots = snap.get("snapshots", {})
        for key, kind, doc in _SNAPSHOT:
            family = _family(kind, f"hotstate_store_{key}", doc, ["app_id", "task", "store", "changelog"])
            for name, values in snapshots.items():
                value = values.get(key)
                if value is None:
                    continue  # no snapshot published yet
                task, _, store = name.partition("/")
                family.add_metric([self._app_id, task, store, values.get("changelog", "")], float(value))
            yield family


def _family(kind: str, name: str, doc: str, labels: list[str]):
    if kind == "counter":
        return CounterMetricFamily(name.removesuffix("_total"), doc, labels=labels)
    return GaugeMetricFamily(name, doc, labels=labels)


class MetricsServer:
    """An HTTP endpoint serving ``/metrics`` on ``port`` (all interfaces) until ``close``."""

    def __init__(self, app_id: str, snapshot: Callable[[], dict], port: int, host: str = "0.0.0.0"):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_SnapshotCollector(app_id, snapshot))
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_port
        log.info("metrics for Prometheus on %s:%d/metrics", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
