"""Bad input (issue 2): undecodable records, an unreachable broker, missing topics, unusable state dirs,
invalid configs and changelogs of the wrong shape each give a clear error within a bounded time."""
from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from confluent_kafka.admin import ConfigResource, ResourceType

import hotstate
from hotstate import serde
from kafka_helpers import build_word_count, unique, wait_for, wait_processed

pytestmark = pytest.mark.integration

STORE = "counts"


def wait_state(app, state: hotstate.AppState, timeout_s: float = 30) -> None:
    wait_for(lambda: app.state is state, f"app state {state} (is {app.state})", timeout_s)


def counting_app(kafka, state_dir, topic: str, key_serde=serde.STRING, value_serde=serde.STRING, **config):
    app = hotstate.App(app_id=kafka.app_id("it-bad"), bootstrap_servers=kafka.bootstrap, state_dir=str(state_dir),
                       commit_interval_ms=100, **config)
    app.stream(topic, key_serde=key_serde, value_serde=value_serde).group_by_key().count(store=STORE)
    return app


# ---- undecodable records ----------------------------------------------------------------------------------

BAD_CASES = {
    # name: (key_serde, value_serde, good (key, value) bytes, bad (key, value) bytes, "key" / "value")
    "int64-value-of-3-bytes": (serde.STRING, serde.INT64, (b"k", (7).to_bytes(8, "big")), (b"k", b"\x00\x01\x02"), "value"),
    "invalid-json-value": (serde.STRING, serde.JSON, (b"k", b'{"ok": 1}'), (b"k", b"{not json"), "value"),
    "invalid-utf8-key": (serde.STRING, serde.STRING, (b"k", b"v"), (b"\xff\xfe", b"v"), "key"),
}


def produce_with_bad_record(kafka, good, bad, bad_partition: int = 1, bad_offset: int = 3) -> str:
    """A 2-partition topic: partition 0 holds 5 good records, ``bad_partition`` 3 good, the bad one at
    ``bad_offset``, then 2 good."""
    topic = kafka.create_topic(partitions=2, prefix="it-bad-input")
    kafka.produce_to(topic, 0, [good] * 5)
    kafka.produce_to(topic, bad_partition, [good] * bad_offset + [bad] + [good] * 2)
    return topic


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_undecodable_record_fails_the_app_naming_topic_partition_offset(kafka, tmp_state_dir, case):
    key_serde, value_serde, good, bad, what = BAD_CASES[case]
    topic = produce_with_bad_record(kafka, good, bad)
    app = counting_app(kafka, tmp_state_dir, topic, key_serde, value_serde)
    app.start()
    try:
        wait_state(app, hotstate.AppState.ERROR)
        with pytest.raises(hotstate.HotstateError) as info:
            app.wait_until_running(timeout_s=5)
        cause = info.value.__cause__
        assert isinstance(cause, hotstate.DeserializationError), repr(cause)
        assert (cause.topic, cause.partition, cause.offset) == (topic, 1, 3)
        for text in (str(info.value), str(cause)):
            assert f"{topic}[1]@3" in text and what in text, text
        assert "log_and_continue" in str(cause)  # says how to skip such records
    finally:
        assert app.close(timeout_s=30)
    assert app.state is hotstate.AppState.NOT_RUNNING
    # The bad record was not skipped: its input offset is not committed past it.
    committed = kafka.committed(app.config.app_id, topic, 2)
    assert committed[1] <= 3, committed


def test_log_and_continue_skips_counts_and_logs_undecodable_records(kafka, tmp_state_dir, caplog):
    caplog.set_level(logging.WARNING, logger="hotstate")
    topic = kafka.create_topic(partitions=2, prefix="it-bad-input")
    good = lambda k: (k.encode(), (1).to_bytes(8, "big"))  # noqa: E731
    kafka.produce_to(topic, 0, [good("a"), good("b"), (b"a", b"\x01\x02\x03"), good("a")])
    kafka.produce_to(topic, 1, [good("c"), (b"c", b""), good("c"), good("c"), (b"d", b"\x00" * 9)])
    app = counting_app(kafka, tmp_state_dir, topic, value_serde=serde.INT64,
                       deserialization_exception_handler="log_and_continue")
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
        wait_processed(app, 6)
        wait_for(lambda: app.metrics()["skipped_records_total"] == 3, "3 skipped records", 10)
        m = app.metrics()
        assert (m["records_processed_total"], m["skipped_records_total"]) == (6, 3)
        store = app.store(STORE)
        assert {k: store.get(k) for k in "abcd"} == {"a": 2, "b": 1, "c": 3, "d": None}
        assert app.state is hotstate.AppState.RUNNING
        wait_for(lambda: kafka.committed(app.config.app_id, topic, 2) == {0: 4, 1: 5},
                 "input offsets committed past the skipped records", 10, 0.2)
    finally:
        assert app.close()
    skipped = [r for r in caplog.records if r.levelno == logging.WARNING and "skipping record" in r.getMessage()]
    assert len(skipped) == 3, [r.getMessage() for r in caplog.records]
    assert any(f"{topic}[0]@2" in r.getMessage() for r in skipped)
    for where in (f"{topic}[1]@1", f"{topic}[1]@4"):
        assert any(where in r.getMessage() for r in skipped), where


# ---- broker, topics, state dir -----------------------------------------------------------------------------

def test_unreachable_broker_fails_start_within_bounded_time(kafka, tmp_state_dir):
    app = hotstate.App(app_id=unique("it-nobroker"), bootstrap_servers="127.0.0.1:1", state_dir=str(tmp_state_dir),
                       broker_timeout_ms=2000)
    app.stream("words", key_serde=serde.STRING).group_by_key().count(store=STORE)
    t0 = time.monotonic()
    with pytest.raises(hotstate.BrokerUnavailableError, match="127.0.0.1:1") as info:
        app.start()
    elapsed = time.monotonic() - t0
    assert elapsed < 15, f"start() took {elapsed:.1f}s to report an unreachable broker"
    assert "bootstrap_servers" in str(info.value)
    assert app.close()
    # The failed start released the state dir: another instance of the app can lock it.
    again = hotstate.App(app_id=app.config.app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_state_dir),
                         broker_timeout_ms=5000)
    again.stream(unique("it-missing"), key_serde=serde.STRING).group_by_key().count(store=STORE)
    with pytest.raises(hotstate.TopologyError):
        again.start()


def test_missing_source_topic_is_a_topology_error_naming_it(kafka, tmp_state_dir):
    missing = unique("it-missing-source")
    app = counting_app(kafka, tmp_state_dir, missing, broker_timeout_ms=5000)
    t0 = time.monotonic()
    with pytest.raises(hotstate.TopologyError, match=missing):
        app.start()
    assert time.monotonic() - t0 < 15
    assert app.state is hotstate.AppState.CREATED
    assert missing not in kafka.admin.list_topics(timeout=10).topics  # not auto-created


def test_missing_sink_topic_is_a_topology_error_naming_it(kafka, tmp_state_dir):
    source = kafka.create_topic(partitions=1, prefix="it-src")
    missing = unique("it-missing-sink")
    app = build_word_count(kafka.bootstrap, kafka.app_id("it-bad"), tmp_state_dir, source, missing)
    with pytest.raises(hotstate.TopologyError, match=missing):
        app.start()


def _app_on(kafka, state_dir, topic):
    return counting_app(kafka, state_dir, topic, broker_timeout_ms=5000)


@pytest.mark.parametrize("where", ["state_dir-is-a-file", "state_dir-under-a-file", "app_dir-is-a-file"])
def test_unwritable_state_dir_is_a_state_dir_error(kafka, tmp_path, where):
    topic = kafka.create_topic(partitions=1, prefix="it-src")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    if where == "state_dir-is-a-file":
        state_dir = blocker
    elif where == "state_dir-under-a-file":
        state_dir = blocker / "state"
    else:
        state_dir = tmp_path / "state"
        state_dir.mkdir()
    app = _app_on(kafka, state_dir, topic)
    if where == "app_dir-is-a-file":
        (state_dir / app.config.app_id).write_text("not a directory")
    t0 = time.monotonic()
    with pytest.raises(hotstate.StateDirError, match="state_dir"):
        app.start()
    assert time.monotonic() - t0 < 15
    assert app.state is hotstate.AppState.CREATED


def test_store_dir_blocked_by_a_file_gives_a_clear_error(kafka, tmp_state_dir):
    """The app dir is fine but a task's directory is a regular file: the app must fail with a
    StateDirError (or report it and fail), not crash with a bare OSError or hang."""
    topic = kafka.create_topic(partitions=1, prefix="it-src")
    kafka.produce_to(topic, 0, [(b"k", b"v")])
    app = _app_on(kafka, tmp_state_dir, topic)
    (tmp_state_dir / app.config.app_id).mkdir()
    (tmp_state_dir / app.config.app_id / "0_0").write_text("not a directory")
    try:
        try:
            app.start()
        except hotstate.StateDirError:
            return  # reported at once: fine
        with pytest.raises(hotstate.HotstateError) as info:
            app.wait_until_running(timeout_s=30)
        chain = []
        exc: BaseException | None = info.value
        while exc is not None:
            chain.append(exc)
            exc = exc.__cause__
        assert any(isinstance(e, hotstate.StateDirError) for e in chain), (
            f"expected a StateDirError naming the store directory, got the chain {chain!r}")
    finally:
        app.close()


def test_second_instance_on_a_locked_state_dir_is_a_state_dir_error(kafka, tmp_state_dir):
    topic = kafka.create_topic(partitions=1, prefix="it-src")
    first = _app_on(kafka, tmp_state_dir, topic)
    first.start()
    try:
        second = hotstate.App(app_id=first.config.app_id, bootstrap_servers=kafka.bootstrap,
                              state_dir=str(tmp_state_dir))
        second.stream(topic, key_serde=serde.STRING).group_by_key().count(store=STORE)
        with pytest.raises(hotstate.StateDirError, match="locked"):
            second.start()
    finally:
        assert first.close()


def test_a_taken_metrics_port_fails_start_leaving_nothing_running(kafka, tmp_state_dir):
    """start() binds metrics_port before it starts the stream thread: a taken port is a ConfigError naming it,
    no hotstate thread runs afterwards, and the state dir is free for the next start."""
    topic = kafka.create_topic(partitions=1, prefix="it-src")
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = counting_app(kafka, tmp_state_dir, topic, broker_timeout_ms=5000, metrics_port=port)
        before = set(threading.enumerate())
        with pytest.raises(hotstate.ConfigError, match=f"metrics_port {port}"):
            app.start()
        assert app.state is hotstate.AppState.CREATED
        assert [t.name for t in threading.enumerate() if t not in before] == [], "start() failed: nothing may run"
        other = hotstate.App(app_id=app.config.app_id, bootstrap_servers=kafka.bootstrap, state_dir=str(tmp_state_dir))
        other.stream(topic, key_serde=serde.STRING).group_by_key().count(store=STORE)
        other.start()  # the state dir is not locked
        try:
            other.wait_until_running(60)
        finally:
            assert other.close()


# ---- config -------------------------------------------------------------------------------------------------

INVALID_CONFIGS = {
    "unknown-key": ({"commit_interval": 100}, "commit_interval"),
    "missing-bootstrap": ({"bootstrap_servers": None}, "bootstrap_servers"),
    "empty-bootstrap": ({"bootstrap_servers": " "}, "bootstrap_servers"),
    "bad-app-id": ({"app_id": "word count!"}, "app_id"),
    "empty-app-id": ({"app_id": ""}, "app_id"),
    "bad-guarantee": ({"processing_guarantee": "exactly_once"}, "processing_guarantee"),
    "zero-commit-interval": ({"commit_interval_ms": 0}, "commit_interval_ms"),
    "negative-timeout": ({"broker_timeout_ms": -5}, "broker_timeout_ms"),
    "bool-as-int": ({"poll_records_max": True}, "poll_records_max"),
    "str-as-int": ({"commit_interval_ms": "100"}, "commit_interval_ms"),
    "bad-handler": ({"deserialization_exception_handler": "ignore"}, "deserialization_exception_handler"),
    "bad-processing-handler": ({"processing_exception_handler": "skip"}, "processing_exception_handler"),
    "bad-dead-letter-topic": ({"dead_letter_topic": "no spaces"}, "dead_letter_topic"),
    "bad-replication": ({"replication_factor": 0}, "replication_factor"),
    "empty-state-dir": ({"state_dir": ""}, "state_dir"),
}


@pytest.mark.parametrize("case", sorted(INVALID_CONFIGS))
def test_invalid_config_is_a_config_error_naming_the_setting(case, tmp_state_dir):
    override, name = INVALID_CONFIGS[case]
    config = {"app_id": "it-config", "bootstrap_servers": "127.0.0.1:9092", "state_dir": str(tmp_state_dir)}
    config.update(override)
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(hotstate.ConfigError, match=name):
        hotstate.App(**config)


@pytest.mark.parametrize("kind", ["disk", ""])
def test_invalid_store_spec_is_a_config_error(kind):
    with pytest.raises(hotstate.ConfigError):
        hotstate.StoreSpec("s", kind=kind)


# ---- changelogs of the wrong shape -------------------------------------------------------------------------

def _policy(kafka, topic: str) -> str:
    res = ConfigResource(ResourceType.TOPIC, topic)
    entries = kafka.admin.describe_configs([res])[res].result(timeout=10)
    return entries["cleanup.policy"].value


def test_changelog_with_wrong_partition_count_is_a_topology_error(kafka, tmp_state_dir):
    source = kafka.create_topic(partitions=4, prefix="it-src")
    app = counting_app(kafka, tmp_state_dir, source)
    changelog = kafka.changelog(app.config.app_id, STORE)
    kafka.create_topic(changelog, partitions=2, config={"cleanup.policy": "compact"})
    with pytest.raises(hotstate.TopologyError, match=changelog) as info:
        app.start()
    assert "2 partitions" in str(info.value) and "4" in str(info.value)
    assert app.state is hotstate.AppState.CREATED
    assert len(kafka.watermarks(changelog)) == 2  # not silently repaired


def test_changelog_with_delete_policy_is_a_topology_error(kafka, tmp_state_dir):
    source = kafka.create_topic(partitions=2, prefix="it-src")
    app = counting_app(kafka, tmp_state_dir, source)
    changelog = kafka.changelog(app.config.app_id, STORE)
    kafka.create_topic(changelog, partitions=2, config={"cleanup.policy": "delete"})
    with pytest.raises(hotstate.TopologyError, match="cleanup.policy") as info:
        app.start()
    assert changelog in str(info.value) and "compact" in str(info.value)
    assert _policy(kafka, changelog) == "delete"  # not silently repaired


def test_changelog_created_compacted_with_source_partition_count(kafka, tmp_state_dir):
    source = kafka.create_topic(partitions=3, prefix="it-src")
    app = counting_app(kafka, tmp_state_dir, source)
    changelog = kafka.changelog(app.config.app_id, STORE)
    app.start()
    try:
        app.wait_until_running(timeout_s=60)
    finally:
        assert app.close()
    assert len(kafka.watermarks(changelog)) == 3
    assert _policy(kafka, changelog) == "compact"
