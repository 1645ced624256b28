"""Records larger than the broker allows (issue 10), on the real broker, under both guarantees: a store value
over its changelog's max.message.bytes, an output over the sink's, and one over the producer's
message.max.bytes each stop the app at once with a RecordTooLargeError naming the store (or topic), the key,
the size and the limit. Under exactly-once it is not taken for a fenced producer (before, the app made new
producers until 'failed fatally 6 times'). Raising the topic's limit, as the message says, fixes it."""
from __future__ import annotations

import logging
import time

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

import hotstate
from hotstate import serde
from kafka_helpers import wait_for, wait_processed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

GUARANTEES = ["at_least_once", "exactly_once_v2"]
STORE = "big"
LIMIT = 2000
BIG = 5000


def big_app(kafka, state_dir, app_id, source, sink, guarantee, **config):
    """Stores and forwards a value of BIG bytes for input value "big", of 1 byte otherwise."""
    app = hotstate.App(app_id=app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       processing_guarantee=guarantee, commit_interval_ms=100, **config)

    def fn(record, ctx):
        value = "x" * BIG if record.value == "big" else "y"
        ctx.store(STORE).put(record.key, value)
        ctx.forward(record.key, value)

    (app.stream(source, key_serde=serde.STRING, value_serde=serde.STRING)
        .process(fn, stores=[hotstate.StoreSpec(STORE, serde.STRING, serde.STRING)],
                 key_serde=serde.STRING, value_serde=serde.STRING)
        .to(sink))
    return app


def run_until_error(app, timeout_s=30.0):
    app.start()
    t0 = time.monotonic()
    try:
        wait_for(lambda: app.state is hotstate.AppState.ERROR, "the app to fail on the large record", timeout_s)
        return app.error(), time.monotonic() - t0
    finally:
        app.close()


def set_max_message_bytes(kafka, topic, value):
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET)])
    kafka.admin.incremental_alter_configs([res])[res].result(timeout=30)


def check_not_fenced(caplog):
    text = caplog.text
    assert "failed fatally" not in text and "new transactional producer" not in text, text[-3000:]


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_a_store_value_over_the_changelog_limit_names_store_key_size_and_limit(kafka, tmp_state_dir, guarantee,
                                                                              caplog):
    caplog.set_level(logging.INFO, logger="hotstate")
    source = kafka.create_topic(partitions=1, prefix="it-big")
    sink = kafka.create_topic(partitions=1, prefix="it-big-out")
    app_id = kafka.app_id("it-big-store")
    changelog = kafka.create_topic(kafka.changelog(app_id, STORE), partitions=1,
                                   config={"cleanup.policy": "compact", "max.message.bytes": str(LIMIT)})
    kafka.produce(source, [("k0", "small"), ("k1", "small"), ("kbig", "big"), ("k2", "small")])

    err, took = run_until_error(big_app(kafka, tmp_state_dir, app_id, source, sink, guarantee,
                                        producer_config={"message.max.bytes": 1_000_000}))
    assert isinstance(err, hotstate.RecordTooLargeError), repr(err)
    assert (err.store, err.topic, err.key, err.limit) == (STORE, changelog, b"kbig", LIMIT)
    assert BIG <= err.size < BIG + 100
    for part in (f"store '{STORE}'", "b'kbig'", f"max.message.bytes={LIMIT}", changelog, "smaller"):
        assert part in str(err), (part, str(err))
    assert took < 20, f"the error took {took:.1f}s"
    check_not_fenced(caplog)
    assert kafka.committed(app_id, source, 1)[0] <= 2  # the large record is not committed past
    if guarantee == "exactly_once_v2":
        assert kafka.read_all(changelog) == []  # the transaction was aborted

    # The same error on a restart (deterministic, and as clear), then the fix the message gives works.
    caplog.clear()
    err, _ = run_until_error(big_app(kafka, tmp_state_dir, app_id, source, sink, guarantee))
    assert isinstance(err, hotstate.RecordTooLargeError) and err.key == b"kbig", repr(err)
    check_not_fenced(caplog)
    set_max_message_bytes(kafka, changelog, 100_000)
    app = big_app(kafka, tmp_state_dir, app_id, source, sink, guarantee)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, 1)
        wait_for(lambda: kafka.committed(app_id, source, 1) == {0: 4}, "the input committed to its end", 30, 0.2)
        assert app.store(STORE).get("kbig") == "x" * BIG
    finally:
        assert app.close()
    assert {m.key(): len(m.value()) for m in kafka.read_all(changelog)}[b"kbig"] == BIG


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_an_output_over_the_sink_limit_names_topic_key_size_and_limit(kafka, tmp_state_dir, guarantee, caplog):
    caplog.set_level(logging.INFO, logger="hotstate")
    source = kafka.create_topic(partitions=1, prefix="it-big")
    sink = kafka.create_topic(partitions=1, prefix="it-big-out", config={"max.message.bytes": str(LIMIT)})
    app_id = kafka.app_id("it-big-sink")
    kafka.produce(source, [("k0", "small"), ("kbig", "big"), ("k1", "small")])

    err, took = run_until_error(big_app(kafka, tmp_state_dir, app_id, source, sink, guarantee))
    assert isinstance(err, hotstate.RecordTooLargeError), repr(err)
    assert (err.store, err.topic, err.key, err.limit) == (None, sink, b"kbig", LIMIT)
    assert BIG <= err.size < BIG + 100
    for part in (f"topic '{sink}'", "b'kbig'", f"max.message.bytes={LIMIT}", "kafka-configs"):
        assert part in str(err), (part, str(err))
    assert took < 20, f"the error took {took:.1f}s"
    check_not_fenced(caplog)
    assert kafka.committed(app_id, source, 1)[0] <= 1
    if guarantee == "exactly_once_v2":
        assert kafka.read_all(sink) == []


@pytest.mark.parametrize("guarantee", GUARANTEES)
def test_an_output_over_the_producer_limit_names_the_producer_setting(kafka, tmp_state_dir, guarantee, caplog):
    caplog.set_level(logging.INFO, logger="hotstate")
    source = kafka.create_topic(partitions=1, prefix="it-big")
    sink = kafka.create_topic(partitions=1, prefix="it-big-out")
    app_id = kafka.app_id("it-big-producer")
    kafka.produce(source, [("k0", "small"), ("kbig", "big")])
    err, _ = run_until_error(big_app(kafka, tmp_state_dir, app_id, source, sink, guarantee,
                                     producer_config={"message.max.bytes": 3000, "batch.size": 3000}))
    assert isinstance(err, hotstate.RecordTooLargeError), repr(err)
    assert (err.topic, err.key, err.limit) == (sink, b"kbig", 3000)
    assert "message.max.bytes=3000" in str(err) and "producer_config" in str(err)
    check_not_fenced(caplog)
