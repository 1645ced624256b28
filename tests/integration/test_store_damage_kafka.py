"""Damaged RocksDB files on the real broker (issue #10, "Corrupt or missing SST"): damage RocksDB sees when
the store opens (an SST's index block, a missing SST) and damage it sees only when a data block is read
(by processing, or by an interactive query). Each time only the damaged store is wiped and restored in full,
the other tasks' stores are untouched, a warning names the store, and the counts come out exact."""
from __future__ import annotations

import glob
import logging
import os
import time

import pytest

import hotstate
from hotstate.state.rocksdb_store import RocksDBBackend
from kafka_helpers import RecordingListener, WordCount, check_listener_agrees, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

STORE = "word-counts"


def warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith("hotstate") and text in r.getMessage()]


def damage_sst(store_dir: str, how: str) -> None:
    """Flushes the closed store's data into an SST file, then damages it: ``index`` (bytes near its end,
    read when the store opens), ``missing`` (the file deleted), ``data`` (its first data block, read only
    when a key in it is read)."""
    b = RocksDBBackend(STORE, store_dir)
    b._db.flush()
    b._meta.flush()
    b.close()
    ssts = glob.glob(os.path.join(store_dir, "*.sst"))
    assert ssts, os.listdir(store_dir)
    sst = max(ssts, key=os.path.getsize)
    if how == "missing":
        os.remove(sst)
        return
    with open(sst, "r+b") as f:
        f.seek(os.path.getsize(sst) - 200 if how == "index" else 100)
        f.write(b"\xa5" * 16)


def counts_exact(app: hotstate.App, wc: WordCount) -> bool:
    store = app.store(STORE)
    try:
        return all(store.get(w) == c for w, c in wc.expected.items())
    except (hotstate.StoreCorruptedError, hotstate.StoreClosedError):  # met the damage, or raced the revive
        return False


@pytest.mark.parametrize("how", ["index", "missing"])
def test_sst_damage_seen_at_open_wipes_and_restores_that_store_alone(kafka, tmp_state_dir, caplog, how):
    caplog.set_level(logging.WARNING, logger="hotstate")
    wc = WordCount(kafka, tmp_state_dir, seed=21)
    wc.produce(2000)
    wc.run()
    damage_sst(str(tmp_state_dir / wc.app_id / "0_0" / STORE), how)
    marks = wc.marks()

    began = time.monotonic()
    _, listener, _, restored = wc.run(produce_while_running=300)
    print(f"fault summary: SST damage ({how}) seen at open: restored {restored['0_0'][STORE]} records, run with "
          f"the check of every count took {time.monotonic() - began:.1f} s")
    check_listener_agrees(listener, marks, expect_start={0: marks[0][0]})  # 0_0 alone, in full
    assert restored["0_0"] == {STORE: marks[0][1] - marks[0][0]}
    why = warnings(caplog, "is damaged")
    assert why and all("0_0" in w and STORE in w for w in why), [r.getMessage() for r in caplog.records]
    assert not warnings(caplog, "locked")
    wc.check_output()


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once_v2"])
def test_a_damaged_data_block_met_while_processing_restores_the_task_and_processing_goes_on(
        kafka, tmp_state_dir, caplog, guarantee):
    caplog.set_level(logging.WARNING, logger="hotstate")
    wc = WordCount(kafka, tmp_state_dir, seed=22, partitions=2)
    wc.produce(2000)
    wc.run()  # fills the stores (WordCount.run's end check reads at-least-once offsets)
    damage_sst(str(tmp_state_dir / wc.app_id / "0_0" / STORE), "data")
    marks = wc.marks()

    listener = RecordingListener()
    app = wc.app(listener, processing_guarantee=guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)  # the damage is not seen yet: no data block was read
        assert app.metrics()["store_corruptions_total"] == 0
        wc.produce(500)  # task 0_0's first record reads the damaged block
        wait_for(lambda: app.metrics()["store_corruptions_total"] >= 1, "processing to meet the damage", 60)
        met = time.monotonic()
        wait_for(lambda: counts_exact(app, wc), "exact counts after the task restored", 90)
        print(f"fault summary: damaged data block met while processing, {guarantee}: exact counts "
              f"{time.monotonic() - met:.1f} s after the damage was met")
        assert app.state in (hotstate.AppState.RUNNING, hotstate.AppState.REBALANCING), app.error()
        full = [e for e in listener.of("start", 0) if e.a == marks[0][0]]
        assert full, f"task 0_0 did not restore its changelog in full: {listener.events}"
        assert not listener.of("start", 1), "the undamaged task restored"
    finally:
        assert app.close()
    assert app.state is hotstate.AppState.NOT_RUNNING, app.error()
    why = warnings(caplog, "wiping its damaged store")
    assert why and all("0_0" in w for w in why), [r.getMessage() for r in caplog.records]
    wc.check_output()


def test_a_damaged_data_block_met_by_a_query_restores_the_task(kafka, tmp_state_dir, caplog):
    caplog.set_level(logging.WARNING, logger="hotstate")
    wc = WordCount(kafka, tmp_state_dir, seed=23, partitions=2)
    wc.produce(2000)
    wc.run()
    damage_sst(str(tmp_state_dir / wc.app_id / "0_0" / STORE), "data")

    app = wc.app()
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        with pytest.raises(hotstate.StoreCorruptedError):
            list(app.store(STORE).all())  # the query meets the damage; the app must not fail for it
        met = time.monotonic()
        wait_for(lambda: app.metrics()["store_corruptions_total"] == 1, "the task to be revived", 30)
        wait_for(lambda: counts_exact(app, wc), "exact counts after the task restored", 90)
        print(f"fault summary: damaged data block met by a query: exact counts "
              f"{time.monotonic() - met:.1f} s after the query met the damage")
        assert dict(app.store(STORE).all()) == dict(wc.expected)
    finally:
        assert app.close()
    assert app.state is hotstate.AppState.NOT_RUNNING, app.error()
