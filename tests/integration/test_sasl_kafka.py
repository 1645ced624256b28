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
from hotstate.cli import main
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


def test_word_count_runs_on_the_sasl_ssl_listener_and_hotstate_state_reads_it_with_command_config(kafka, tmp_state_dir, sasl_settings, capsys):
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
    # The hotstate command reads the changelog ends over the same listener, given the file client-config printed.
    command_config = tmp_state_dir.parent / "client.json"
    command_config.write_text(json.dumps(sasl_settings))
    capsys.readouterr()
    assert main(["state", "--app-id", app_id, "--state-dir", str(tmp_state_dir), "--command-config",
                 str(command_config)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    ends = kafka.ends(kafka.changelog(app_id, "word-counts"))
    assert {int(r[0].split("_")[1]): int(r[3]) for r in rows} == ends


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


def test_a_standby_takes_over_on_the_sasl_ssl_listener(kafka, tmp_path, sasl_settings):
    """Two instances on the secured listener, one standby each: when one leaves, the other's standby of its task
    becomes active and replays less than the whole changelog (it followed it over SASL_SSL)."""
    from kafka_helpers import RecordingListener

    source = kafka.create_topic(partitions=2, prefix="sasl-standby")
    app_id = kafka.app_id("sasl-standby")
    bootstrap, kafka_config = secured(sasl_settings)

    def produce_round(tag: str, n: int = 200) -> None:
        for p in (0, 1):
            kafka.produce_to(source, p, [(f"{tag}-{p}-{i % 20}".encode(), b"x") for i in range(n)])

    def actives(app) -> set[str]:
        return {t.id for t in app.tasks() if not t.standby and t.state is hotstate.TaskState.RUNNING}

    produce_round("r1")
    common = dict(num_standby_replicas=1, session_timeout_ms=6000, kafka_config=kafka_config)
    restore_a = RecordingListener()
    a = build_word_count(bootstrap, app_id, tmp_path / "a", source, None, listener=restore_a, **common)
    b = build_word_count(bootstrap, app_id, tmp_path / "b", source, None, **common)
    a.start()
    try:
        wait_for(lambda: actives(a) == {"0_0", "0_1"}, "a to run both tasks", 60)
        b.start()
        wait_for(lambda: len(actives(a)) == 1 and len(actives(b)) == 1, "one task to move to b", 90)
        b_task = next(iter(actives(b)))
        wait_for(lambda: b_task in {t.id for t in a.tasks() if t.standby}, "a to keep a standby of b's task", 60)
        p = int(b_task.split("_")[1])
        changelog = kafka.changelog(app_id, "word-counts")
        end_before = kafka.ends(changelog)[p]
        produce_round("r2")  # processed by b, followed by a's standby
        wait_for(lambda: b.store("word-counts").get(f"r2-{p}-19") == 10, "b to count round 2", 60)

        def standby_offset() -> int:
            return next((t.stores["word-counts"].changelog_offset or 0) for t in a.tasks()
                        if t.standby and t.id == b_task)

        wait_for(lambda: kafka.ends(changelog)[p] > end_before and standby_offset() == kafka.ends(changelog)[p],
                 "a's standby to follow round 2 to the changelog end", 60)
        followed = standby_offset()
        assert b.close(timeout_s=30)
        wait_for(lambda: actives(a) == {"0_0", "0_1"}, "a to take b's task back", 60)
        wait_for(lambda: all(a.store("word-counts").get(f"{tag}-{q}-{k}") == 10
                             for tag in ("r1", "r2") for q in (0, 1) for k in range(20)),
                 "a to hold every count", 60)
        # Only what b wrote after the standby's last read (its closing commit) is replayed.
        assert restore_a.totals().get(p, 0) <= kafka.ends(changelog)[p] - followed, restore_a.events
    finally:
        b.close(timeout_s=30)
        assert a.close(timeout_s=30)
