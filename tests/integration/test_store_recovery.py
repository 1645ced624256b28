"""Local stores the changelog cannot continue are wiped and restored in full, with a warning that says why:
a stored offset beyond the changelog end (changelog recreated), below its start (records deleted), and a
corrupted RocksDB store."""
from __future__ import annotations

import logging
import shutil
from collections import defaultdict

import pytest
from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from kafka_helpers import RecordingListener, WordCount, check_listener_agrees, int64, utf8

pytestmark = pytest.mark.integration

STORE = "word-counts"


def warnings(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith("hotstate") and text in r.getMessage()]


def latest_changelog_records(kafka, changelog: str) -> dict[int, dict[bytes, bytes | None]]:
    """partition -> {key: latest value} of a changelog (what compaction would keep)."""
    out: dict[int, dict[bytes, bytes | None]] = defaultdict(dict)
    for msg in kafka.read_all(changelog):
        out[msg.partition()][msg.key()] = msg.value()
    return out


def test_stored_offset_beyond_changelog_end_wipes_and_restores(kafka, tmp_state_dir, caplog):
    caplog.set_level(logging.WARNING, logger="hotstate")
    wc = WordCount(kafka, tmp_state_dir, seed=11)
    wc.produce(2000)
    wc.run()
    wc.run(produce_while_running=1500)  # many keys now have two changelog records
    stored = kafka.ends(wc.changelog)  # == each store's offset after a clean close

    # Recreate the changelog, holding only the latest record per key: shorter than the stores' offsets.
    latest = latest_changelog_records(kafka, wc.changelog)
    kafka.recreate_topic(wc.changelog, wc.partitions, {"cleanup.policy": "compact"})
    for p, records in latest.items():
        kafka.produce_to(wc.changelog, p, records.items())
    marks = wc.marks()
    assert all(marks[p] == (0, len(latest[p])) and len(latest[p]) < stored[p] for p in range(wc.partitions)), (
        marks, stored)

    _, listener, ends, _ = wc.run(produce_while_running=500)
    check_listener_agrees(listener, marks, expect_start={p: 0 for p in range(wc.partitions)})
    assert listener.totals() == {p: len(latest[p]) for p in range(wc.partitions)}
    why = warnings(caplog, "beyond the changelog end")
    assert len(why) == wc.partitions, [r.getMessage() for r in caplog.records]
    for p in range(wc.partitions):
        assert any(f"offset {stored[p]} is beyond the changelog end {marks[p][1]}" in w for w in why), (p, why)
    wc.check_output()


def _set_policy(kafka, topic: str, policy: str) -> None:
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("cleanup.policy", policy, incremental_operation=AlterConfigOpType.SET)])
    for fut in kafka.admin.incremental_alter_configs([res]).values():
        fut.result(timeout=30)


def test_stored_offset_below_changelog_start_wipes_and_restores_what_is_left(kafka, tmp_state_dir, tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="hotstate")
    wc = WordCount(kafka, tmp_state_dir, seed=12)
    wc.produce(2000)
    wc.run()
    old = kafka.ends(wc.changelog)
    aside = tmp_path / "old-state"
    shutil.copytree(tmp_state_dir, aside)
    wc.run(produce_while_running=1500)

    # Delete the changelog records the old state would need (DeleteRecords needs a 'delete' policy).
    _set_policy(kafka, wc.changelog, "compact,delete")
    cut = {p: old[p] + 1 for p in range(wc.partitions)}
    futs = kafka.admin.delete_records([KTopicPartition(wc.changelog, p, off) for p, off in cut.items()])
    for fut in futs.values():
        fut.result(timeout=30)
    _set_policy(kafka, wc.changelog, "compact")
    marks = wc.marks()
    assert {p: low for p, (low, _) in marks.items()} == cut

    # What the changelog still has is what a correct restore yields; keys whose records were all deleted
    # must be gone (the old local state must not leak through).
    left = {utf8(m.key()): int64(m.value()) for m in kafka.read_all(wc.changelog)}
    gone = {w: None for w in wc.expected if w not in left}
    assert gone, "the test needs keys whose every changelog record was deleted"

    shutil.rmtree(tmp_state_dir)
    shutil.copytree(aside, tmp_state_dir)
    listener = RecordingListener()
    app = wc.app(listener)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        check_listener_agrees(listener, marks, expect_start=cut)
        wc.check_store(app, expected={**left, **gone})
    finally:
        assert app.close()
    why = warnings(caplog, "below the changelog start")
    assert len(why) == wc.partitions, [r.getMessage() for r in caplog.records]
    for p in range(wc.partitions):
        assert any(f"offset {old[p]} is below the changelog start {cut[p]}" in w for w in why), (p, why)


@pytest.mark.parametrize("victim", ["CURRENT", "MANIFEST"])
def test_corrupted_store_is_wiped_and_restored(kafka, tmp_state_dir, caplog, victim):
    caplog.set_level(logging.WARNING, logger="hotstate")
    wc = WordCount(kafka, tmp_state_dir, seed=13)
    wc.produce(2000)
    wc.run()
    store_dir = tmp_state_dir / wc.app_id / "0_0" / STORE
    files = sorted(store_dir.glob(f"{victim}*"))
    assert files, f"no {victim} file in {sorted(x.name for x in store_dir.iterdir())}"
    for f in files:
        f.write_bytes(b"\x00garbage\xff" * 16)
    marks = wc.marks()

    _, listener, _, restored = wc.run(produce_while_running=300)
    # Only task 0_0's store was corrupted: only it restores, and in full.
    check_listener_agrees(listener, marks, expect_start={0: marks[0][0]})
    assert listener.totals() == {0: marks[0][1] - marks[0][0]}
    assert restored["0_0"] == {STORE: marks[0][1] - marks[0][0]}
    why = warnings(caplog, "cannot be opened")
    assert why and all("0_0" in w and STORE in w for w in why), [r.getMessage() for r in caplog.records]
    wc.check_output()
