"""At-least-once against the real broker: an offset commit refused as stale (a zombie's) closes every task as
lost; the member drops out, rejoins, and the task restores from its changelog instead of running on."""
from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from kafka_helpers import build_word_count, int64, store_offsets, utf8, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_a_refused_offset_commit_drops_out_and_the_task_restores(kafka, tmp_state_dir, monkeypatch):
    from hotstate.runtime import membership
    real = membership.GroupMembership._commit
    state = {"armed": False, "fired": 0}

    def commit(self, offsets):
        if state["armed"]:
            state["armed"] = False
            state["fired"] += 1
            raise KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION, "refused (injected)"))
        return real(self, offsets)
    monkeypatch.setattr(membership.GroupMembership, "_commit", commit)
    source = kafka.create_topic(partitions=1, prefix="alos-refused")
    sink = kafka.create_topic(partitions=1, prefix="alos-refused-out")
    app_id = kafka.app_id("alos-refused")
    app = build_word_count(kafka.bootstrap, app_id, tmp_state_dir, source, sink)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        for wave in range(3):
            state["armed"] = wave == 1  # the commit of the second wave is refused
            kafka.produce(source, [("a", "x")] * 10)
            wait_for(lambda: kafka.committed(app_id, source, 1) == {0: 10 * (wave + 1)}, f"wave {wave} committed",
                     60, 0.2)
        app.wait_until_running(timeout_s=60)
        assert state["fired"] == 1
        assert app.metrics()["rebalances_total"] >= 2, "the member dropped out and was assigned its task again"
        changelog = kafka.changelog(app_id, "word-counts")
        wait_for(lambda: store_offsets(app, "word-counts") == kafka.ends(changelog), "store at the changelog end",
                 30, 0.2)
        count = app.store("word-counts").get("a")
    finally:
        assert app.close()
    outputs = [int64(m.value()) for m in kafka.read_all(sink) if utf8(m.key()) == "a"]
    # The refused commit's input is processed again on top of the restored store (duplicates, at-least-once),
    # but the count never goes back: the task did not run on from a store that lacked its changelog's records.
    assert outputs == list(range(1, len(outputs) + 1)) and count == outputs[-1] and count > 30, outputs
