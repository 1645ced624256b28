"""A cold restore big enough for RocksDB's bulk-load mode, on the real broker: every key ends with its last
changelog value, each store's offset is its changelog's end, a clean restart replays nothing, and the
restore metrics (app.metrics() and the Prometheus endpoint) tell what happened."""
from __future__ import annotations

import socket
import struct
import urllib.request

import pytest
from confluent_kafka import Producer

import hotstate
from hotstate import serde
from hotstate.state.rocksdb_store import RocksDBBackend

pytestmark = pytest.mark.integration

PARTITIONS = 2
KEYS = 100_000  # per partition, written once each, then 10% updated again and 1% deleted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_changelog(bootstrap: str, topic: str) -> dict[bytes, bytes | None]:
    """Returns the final value of every key (None: deleted)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "queue.buffering.max.messages": 1_000_000})
    final: dict[bytes, bytes | None] = {}

    def send(part: int, key: bytes, value: bytes | None) -> None:
        while True:
            try:
                p.produce(topic, value, key, part)
                break
            except BufferError:
                p.poll(0.05)
        final[key] = value

    for part in range(PARTITIONS):
        for i in range(KEYS):
            send(part, struct.pack(">II", part, i), struct.pack(">Q", i) * 4)
        for i in range(0, KEYS, 10):
            send(part, struct.pack(">II", part, i), struct.pack(">Q", i + 1) * 4)
        for i in range(5, KEYS, 100):
            send(part, struct.pack(">II", part, i), None)
    assert p.flush(60) == 0
    return final


def build(bootstrap: str, app_id: str, source: str, state_dir, **config) -> hotstate.App:
    app = hotstate.App(app_id=app_id, bootstrap_servers=bootstrap, state_dir=str(state_dir), **config)
    app.stream(source).process(lambda record, ctx: None, stores=[hotstate.StoreSpec("store", serde.BYTES, serde.BYTES)])
    return app


def test_bulk_restore_is_complete_durable_and_measured(kafka, tmp_state_dir):
    app_id = kafka.app_id("it-restore")
    source = kafka.create_topic(partitions=PARTITIONS, prefix="it-restore-in")
    changelog = kafka.create_topic(kafka.changelog(app_id, "store"), partitions=PARTITIONS,
                                   config={"cleanup.policy": "compact", "min.compaction.lag.ms": "3600000"})
    final = fill_changelog(kafka.bootstrap, changelog)
    per_partition = KEYS + KEYS // 10 + KEYS // 100
    assert per_partition >= RocksDBBackend.BULK_RESTORE_RECORDS_MIN  # the bulk-load path is the one tested
    port = free_port()

    app = build(kafka.bootstrap, app_id, source, tmp_state_dir, metrics_port=port)
    app.start()
    try:
        app.wait_until_running(timeout_s=120)
        store = app.store("store")
        wrong = [k for k, v in final.items() if store.get(k) != v]
        assert wrong == []
        assert sum(1 for _ in store.all()) == sum(1 for v in final.values() if v is not None)
        for t in app.tasks():
            s = t.stores["store"]
            assert s.restored_records == per_partition
            assert s.changelog_offset == per_partition  # the changelog's end: nothing left to replay
        m = app.metrics()
        assert m["restore_records_total"] == PARTITIONS * per_partition
        assert m["active_restoring_tasks"] == 0 and m["standby_updating_tasks"] == 0
        assert m["active_restore_ratio"] > 0
        assert sorted(m["restores"]) == [f"0_{p}/store" for p in range(PARTITIONS)]
        for r in m["restores"].values():
            assert r["state"] == "RESTORED" and r["restore_records_total"] == per_partition
            assert r["restore_remaining_records"] == 0 and r["restore_eta_s"] == 0.0
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert f'hotstate_restore_records_total{{app_id="{app_id}"}} {float(PARTITIONS * per_partition)}' in text
        assert "hotstate_store_restore_remaining_records{" in text
    finally:
        assert app.close()
    with pytest.raises(OSError):  # the endpoint closed with the app
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)

    # A clean restart: the stores kept their data and offsets through the switch back to processing options.
    app = build(kafka.bootstrap, app_id, source, tmp_state_dir)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        assert [t.stores["store"].restored_records for t in app.tasks()] == [0] * PARTITIONS
        store = app.store("store")
        assert [k for k, v in list(final.items())[::97] if store.get(k) != v] == []
    finally:
        assert app.close()
