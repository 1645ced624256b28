"""hotstate on a secured listener: the SASL_SSL (SCRAM-SHA-512) listener ``scripts/kafka start`` opens, with the
client settings ``scripts/kafka client-config --sasl`` prints (as a user would pass them: bootstrap_servers from
``bootstrap.servers``, the rest as ``kafka_config``). Topics are made and read through the plaintext listener of
the same broker; every client of the app (consumers, producer, admin, the kafka-python group member) goes
through the secured one."""
from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import time

import pytest

import hotstate
from hotstate import serde
from kafka_helpers import (KAFKA_SCRIPT, build_word_count, true_counts, wait_for, wait_processed, word_records,
                           words)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

PARTITIONS = 2


@pytest.fixture(scope="module")
def sasl_settings(bootstrap: str) -> dict[str, str]:
    """The SASL_SSL listener's client settings (librdkafka names), from ``scripts/kafka client-config --sasl``."""
    proc = subprocess.run([str(KAFKA_SCRIPT), "client-config", "--sasl"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"scripts/kafka client-config --sasl failed: {proc.stderr}"
    settings = json.loads(proc.stdout)
    assert settings["security.protocol"] == "SASL_SSL" and settings["bootstrap.servers"] != bootstrap
    return settings


def secured(settings: dict[str, str]) -> tuple[str, dict[str, str]]:
    cfg = dict(settings)
    return cfg.pop("bootstrap.servers"), cfg


def test_word_count_runs_on_the_sasl_ssl_listener(kafka, tmp_state_dir, sasl_settings):
    source = kafka.create_topic(partitions=PARTITIONS, prefix="sasl-words")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="sasl-counts")
    app_id = kafka.app_id("sasl-wc")
    recs = word_records(random.Random(13), words(100), 1500)
    kafka.produce(source, recs, partitions=PARTITIONS)
    bootstrap, kafka_config = secured(sasl_settings)
    app = build_word_count(bootstrap, app_id, tmp_state_dir, source, sink, kafka_config=kafka_config)
    assert sasl_settings["sasl.password"] not in repr(app) + repr(app.config)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, len(recs))
        wait_for(lambda: kafka.read_table(sink) == dict(true_counts(recs)), "the counts in the output", 60, 0.3)
        assert sasl_settings["sasl.password"] not in json.dumps(app.metrics(), default=str)
    finally:
        assert app.close(timeout_s=30)


def test_exactly_once_on_the_sasl_ssl_listener(kafka, tmp_state_dir, sasl_settings):
    source = kafka.create_topic(partitions=PARTITIONS, prefix="sasl-eos-words")
    sink = kafka.create_topic(partitions=PARTITIONS, prefix="sasl-eos-counts")
    app_id = kafka.app_id("sasl-eos")
    recs = word_records(random.Random(17), words(100), 1500)
    kafka.produce(source, recs, partitions=PARTITIONS)
    bootstrap, kafka_config = secured(sasl_settings)
    app = build_word_count(bootstrap, app_id, tmp_state_dir, source, sink, kafka_config=kafka_config,
                           processing_guarantee="exactly_once_v2")
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, len(recs))
        # read_committed: only the committed transactions' records, each count exact.
        wait_for(lambda: kafka.read_table(sink) == dict(true_counts(recs)), "exact counts in the output", 60, 0.3)
        assert kafka.committed(app_id, source, PARTITIONS) == kafka.ends(source)
    finally:
        assert app.close(timeout_s=30)


def test_a_wrong_password_fails_start_with_the_authentication_failure_within_broker_timeout(
        kafka, tmp_state_dir, sasl_settings, caplog):
    source = kafka.create_topic(partitions=1, prefix="sasl-wrong")
    bootstrap, kafka_config = secured(sasl_settings)
    wrong = "not-the-password-" + os.urandom(4).hex()
    # librdkafka's debug lines of the connection, security and configuration: none may carry the password.
    kafka_config.update({"sasl.password": wrong, "debug": "security,broker,conf"})
    app = build_word_count(bootstrap, kafka.app_id("sasl-wrong"), tmp_state_dir, source, None,
                           kafka_config=kafka_config, broker_timeout_ms=4000)
    caplog.set_level(logging.DEBUG)
    began = time.monotonic()
    with pytest.raises(hotstate.BrokerUnavailableError) as err:
        app.start()
    took = time.monotonic() - began
    try:
        assert took < 4 + 2, f"start() gave up after {took:.1f}s with broker_timeout_ms=4000"
        message = str(err.value)
        assert "authentication" in message.lower(), message
        assert "kafka_config" in message, message  # says what to check
        assert wrong not in message
        assert caplog.records, "no log lines were captured (the check below would prove nothing)"
        assert any("SASL" in r.getMessage() for r in caplog.records), "librdkafka's security debug lines missing"
        leaked = [r.getMessage() for r in caplog.records if wrong in r.getMessage()]
        assert not leaked, leaked[:3]
    finally:
        app.close(timeout_s=10)
