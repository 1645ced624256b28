"""Config validation: every invalid value is a ConfigError naming the field."""
from __future__ import annotations

import dataclasses
import os

import pytest

import hotstate
from hotstate.config import Config, default_state_dir
from hotstate.errors import ConfigError

REQUIRED = dict(app_id="wordcount", bootstrap_servers="127.0.0.1:9092")


def make(**kw):
    return Config.from_kwargs(**{**REQUIRED, **kw})


def test_valid_defaults():
    c = make()
    assert c.app_id == "wordcount"
    assert c.bootstrap_servers == "127.0.0.1:9092"
    assert c.processing_guarantee == "at_least_once"
    assert c.deserialization_exception_handler == "log_and_fail"
    assert c.commit_interval_ms == 30_000
    assert c.replication_factor == -1
    assert c.state_dir == default_state_dir()
    assert c.group_id == "wordcount"
    assert c.changelog_topic("word-counts") == "wordcount-word-counts-changelog"


def test_default_state_dir_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_state_dir() == os.path.join(str(tmp_path), "hotstate")
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_state_dir().endswith(os.path.join(".local", "state", "hotstate"))


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make().app_id = "other"


def test_valid_non_defaults():
    c = make(processing_guarantee="at_least_once", deserialization_exception_handler="log_and_continue",
             commit_interval_ms=1, replication_factor=3, state_dir="/tmp/x")
    assert (c.commit_interval_ms, c.replication_factor, c.state_dir) == (1, 3, "/tmp/x")


def test_state_dir_pathlike_becomes_str(tmp_path):
    c = make(state_dir=tmp_path)
    assert c.state_dir == str(tmp_path) and isinstance(c.state_dir, str)


@pytest.mark.parametrize("app_id", ["", "has space", "a/b", "ä", "x" * 201, 123, None, "a:b"])
def test_invalid_app_id(app_id):
    with pytest.raises(ConfigError, match="app_id"):
        make(app_id=app_id)


@pytest.mark.parametrize("app_id", ["a", "A.b_c-9", "x" * 200])
def test_valid_app_id(app_id):
    assert make(app_id=app_id).app_id == app_id


def test_app_id_with_trailing_newline_is_rejected():
    with pytest.raises(ConfigError, match="app_id"):
        make(app_id="wordcount\n")


@pytest.mark.parametrize("app_id", [".", ".."])
def test_dot_app_ids_are_rejected(app_id):
    with pytest.raises(ConfigError, match="app_id"):
        make(app_id=app_id)


@pytest.mark.parametrize("bs", ["", "   ", None, 9092])
def test_empty_bootstrap_servers(bs):
    with pytest.raises(ConfigError, match="bootstrap_servers"):
        make(bootstrap_servers=bs)


@pytest.mark.parametrize("pg", ["exactly_once", "exactly_once_beta", "AT_LEAST_ONCE", "", None])
def test_invalid_processing_guarantee(pg):
    with pytest.raises(ConfigError, match="processing_guarantee"):
        make(processing_guarantee=pg)


@pytest.mark.parametrize("h", ["log_and_skip", "LOG_AND_FAIL", "", None])
def test_invalid_deserialization_exception_handler(h):
    with pytest.raises(ConfigError, match="deserialization_exception_handler"):
        make(deserialization_exception_handler=h)


POSITIVE_INT_FIELDS = ["commit_interval_ms", "broker_timeout_ms", "restore_batch_records_max",
                       "restore_consume_records_max", "poll_records_max", "poll_ms", "session_timeout_ms",
                       "statestore_uncommitted_max_bytes", "transaction_timeout_ms", "rewind_timeout_ms", "state_cleanup_delay_ms"]


@pytest.mark.parametrize("field", POSITIVE_INT_FIELDS)
@pytest.mark.parametrize("bad", [0, -1, 1.5, "100", True, None])
def test_non_positive_limits(field, bad):
    with pytest.raises(ConfigError, match=field):
        make(**{field: bad})


@pytest.mark.parametrize("field", POSITIVE_INT_FIELDS)
def test_positive_limits_accepted(field):
    assert getattr(make(**{field: 1}), field) == 1


@pytest.mark.parametrize("rf", [0, -2, 1.0, "3", None])
def test_invalid_replication_factor(rf):
    with pytest.raises(ConfigError, match="replication_factor"):
        make(replication_factor=rf)


def test_replication_factor_rejects_bool():
    with pytest.raises(ConfigError, match="replication_factor"):
        make(replication_factor=True)


def test_empty_state_dir():
    with pytest.raises(ConfigError, match="state_dir"):
        make(state_dir="")


@pytest.mark.parametrize("sd", [None, 123])
def test_non_path_state_dir_is_config_error(sd):
    with pytest.raises(ConfigError, match="state_dir"):
        make(state_dir=sd)


def test_unknown_kwarg_lists_known_names():
    with pytest.raises(ConfigError) as ei:
        make(commit_interval=100)
    msg = str(ei.value)
    assert "commit_interval" in msg
    for known in ("app_id", "bootstrap_servers", "commit_interval_ms", "state_dir", "processing_guarantee"):
        assert known in msg


@pytest.mark.parametrize("missing", ["app_id", "bootstrap_servers"])
def test_missing_required(missing):
    kw = dict(REQUIRED)
    del kw[missing]
    with pytest.raises(ConfigError, match=missing):
        Config.from_kwargs(**kw)


def test_config_error_is_a_value_error_and_hotstate_error():
    with pytest.raises(ValueError):
        make(poll_ms=0)
    with pytest.raises(hotstate.HotstateError):
        make(poll_ms=0)


@pytest.mark.parametrize("bad", [dict(app_id="bad id"), dict(commit_interval_ms=0), dict(nope=1),
                                 dict(processing_guarantee="exactly_once"), dict(replication_factor=0)])
def test_app_with_bad_config_raises_config_error(bad, tmp_path):
    with pytest.raises(ConfigError):
        hotstate.App(**{**REQUIRED, "state_dir": str(tmp_path), **bad})


def test_app_without_app_id_raises_config_error():
    with pytest.raises(ConfigError, match="app_id"):
        hotstate.App(bootstrap_servers="127.0.0.1:9092")


def test_app_keeps_its_config(tmp_path):
    app = hotstate.App(**REQUIRED, state_dir=tmp_path, commit_interval_ms=100)
    assert app.config.commit_interval_ms == 100
    assert app.config.state_dir == str(tmp_path)


def test_commit_interval_default_follows_the_guarantee():
    # Kafka Streams' defaults: 30 s under at-least-once, 100 ms under exactly-once.
    assert make().commit_interval_ms == 30_000
    assert make(processing_guarantee="exactly_once_v2").commit_interval_ms == 100
    assert make(processing_guarantee="exactly_once_v2", commit_interval_ms=500).commit_interval_ms == 500
    assert make(processing_guarantee="exactly_once_v2").exactly_once
    assert not make().exactly_once


@pytest.mark.parametrize("bad", ["", "pod 1", "x" * 201, 7])
def test_invalid_group_instance_id(bad):
    with pytest.raises(ConfigError, match="group_instance_id"):
        make(group_instance_id=bad)


def test_group_instance_id_reaches_the_group_member_only(monkeypatch):
    """The kafka-python member is the static member; the librdkafka consumers never join the group."""
    from hotstate.kafka import clients
    from hotstate.runtime import membership
    seen: dict = {}
    monkeypatch.setattr(clients, "Consumer", lambda conf: seen.update(conf))
    monkeypatch.setattr(membership, "KafkaConsumer", lambda **kw: seen.update(kw))
    membership._kafka_member(make(group_instance_id="pod-1"), None)
    assert seen["group_instance_id"] == "pod-1" and seen["group_id"] == "wordcount"
    seen.clear()
    clients.main_consumer(make(group_instance_id="pod-1"))
    assert "group.instance.id" not in seen and "partition.assignment.strategy" not in seen
    seen.clear()
    clients.restore_consumer(make(group_instance_id="pod-1"))
    assert "group.instance.id" not in seen
    seen.clear()
    membership._kafka_member(make(), None)
    assert seen["group_instance_id"] is None


@pytest.mark.parametrize("name, bad", [("num_standby_replicas", -1), ("acceptable_recovery_lag", -5),
                                       ("max_warmup_replicas", 0), ("probing_rebalance_interval_ms", 0),
                                       ("max_poll_interval_ms", -1), ("num_standby_replicas", True),
                                       ("acceptable_recovery_lag", "10")])
def test_high_availability_configs_are_validated(name, bad):
    with pytest.raises(ConfigError, match=name):
        make(**{name: bad})


def test_high_availability_defaults_are_kafka_streams_defaults():
    c = make()
    assert (c.num_standby_replicas, c.acceptable_recovery_lag, c.max_warmup_replicas,
            c.probing_rebalance_interval_ms) == (0, 10_000, 2, 600_000)
    assert make(num_standby_replicas=2, acceptable_recovery_lag=0).num_standby_replicas == 2


def test_windowstore_changelog_additional_retention_is_kafka_streams_default_and_validated():
    assert make().windowstore_changelog_additional_retention_ms == 86_400_000
    assert make(windowstore_changelog_additional_retention_ms=0).windowstore_changelog_additional_retention_ms == 0
    for bad in (-1, "1000", 1.5):
        with pytest.raises(ConfigError, match="windowstore_changelog_additional_retention_ms"):
            make(windowstore_changelog_additional_retention_ms=bad)


def test_repartition_purge_interval_is_kafka_streams_default_and_validated():
    assert make().repartition_purge_interval_ms == 30_000
    assert make(repartition_purge_interval_ms=500).repartition_purge_interval_ms == 500
    for bad in (0, -1, "1000", 1.5, True):
        with pytest.raises(ConfigError, match="repartition_purge_interval_ms"):
            make(repartition_purge_interval_ms=bad)


def test_exactly_once_commit_interval_must_be_below_the_transaction_timeout():
    """A transaction stays open for a commit interval; the broker aborts one older than transaction_timeout_ms,
    so every commit of a longer interval would fail."""
    for interval, timeout in ((10_000, 10_000), (60_000, 10_000), (5_000, 1_000)):
        with pytest.raises(ConfigError, match="commit_interval_ms.*transaction_timeout_ms") as ei:
            make(processing_guarantee="exactly_once_v2", commit_interval_ms=interval, transaction_timeout_ms=timeout)
        assert "lower commit_interval_ms or raise transaction_timeout_ms" in str(ei.value)
    assert make(processing_guarantee="exactly_once_v2", commit_interval_ms=9_999).commit_interval_ms == 9_999
    assert make(processing_guarantee="exactly_once_v2", commit_interval_ms=60_000,
                transaction_timeout_ms=120_000).transaction_timeout_ms == 120_000
    assert make(commit_interval_ms=60_000).commit_interval_ms == 60_000  # at-least-once has no transactions
