"""The admin's reading of changelog topic configurations, with a fake AdminClient."""
from __future__ import annotations

from concurrent.futures import Future

import pytest
from confluent_kafka import KafkaError, KafkaException

from hotstate.config import Config
from hotstate.errors import TopologyError
from hotstate.kafka.admin import Admin, ChangelogSpec


class Entry:
    def __init__(self, value):
        self.value = value


class SlowToKnowAdmin:
    """Answers UNKNOWN_TOPIC_OR_PART for a topic's first ``unknown_for`` describe_configs, as a broker of a cluster
    that has not yet seen a topic the controller just created."""

    def __init__(self, unknown_for: int, policy: str = "compact"):
        self.unknown_for, self.policy, self.calls = unknown_for, policy, 0

    def describe_configs(self, resources, request_timeout=None):
        self.calls += 1
        out = {}
        for res in resources:
            f: Future = Future()
            if self.calls <= self.unknown_for:
                f.set_exception(KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "not yet")))
            else:
                f.set_result({"cleanup.policy": Entry(self.policy)})
            out[res] = f
        return out


def admin_with(fake, broker_timeout_ms=5000) -> Admin:
    admin = Admin(Config(app_id="a", bootstrap_servers="127.0.0.1:1", broker_timeout_ms=broker_timeout_ms))
    admin._admin = fake
    return admin


def test_a_topic_unknown_for_a_moment_to_the_answering_broker_is_asked_again():
    """Before: the app's start failed with UNKNOWN_TOPIC_OR_PART right after creating its changelogs on a 3-node
    cluster (a clean-clone scripts/test run, tests/chaos/test_cluster_node_kill.py)."""
    fake = SlowToKnowAdmin(unknown_for=2)
    admin_with(fake)._check_policies([ChangelogSpec("c1", 4), ChangelogSpec("c2", 4)])
    assert fake.calls == 3


def test_a_topic_that_stays_unknown_fails_after_the_broker_timeout():
    with pytest.raises(KafkaException):
        admin_with(SlowToKnowAdmin(unknown_for=10_000), broker_timeout_ms=300)._check_policies([ChangelogSpec("c", 4)])


def test_a_wrong_policy_is_still_a_topology_error():
    with pytest.raises(TopologyError, match="cleanup.policy"):
        admin_with(SlowToKnowAdmin(unknown_for=1, policy="delete"))._check_policies([ChangelogSpec("c", 4)])
