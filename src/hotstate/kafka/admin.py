"""Topic checks at start-up: sources exist, changelogs and repartition topics exist with the right shape
(created if absent); and the purge of repartition topics (delete records below the committed offsets)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka import TopicPartition as KTopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from ..config import Config
from .clients import admin_settings
from ..errors import BrokerUnavailableError, TopologyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChangelogSpec:
    topic: str
    partitions: int
    cleanup_policy: str = "compact"
    retention_ms: int | None = None  # windowed stores' changelogs ("compact,delete"); None: the broker's default


@dataclass(frozen=True)
class RepartitionTopicSpec:
    """An internal topic between two sub-topologies. Kafka Streams' settings: delete policy, and no retention by
    time (``retention.ms=-1``): the app deletes what it has consumed and committed (``delete_records``), so a
    record is never dropped before it is processed."""

    topic: str
    partitions: int


class Admin:
    def __init__(self, config: Config):
        self._config = config
        self._timeout_s = config.broker_timeout_ms / 1000
        # The last authentication or TLS failure librdkafka reported: a metadata request that times out says only
        # "transport failure", this says why (wrong password, untrusted certificate). Never holds a secret.
        self._security_error: str | None = None
        self._admin = AdminClient({**admin_settings(config), "error_cb": self._on_error})

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError.SASL_AUTHENTICATION_FAILED):
            self._security_error = err.str()

    def partition_counts(self) -> dict[str, int]:
        """Topic -> partition count; raises BrokerUnavailableError if no broker answers in time."""
        try:
            md = self._admin.list_topics(timeout=self._timeout_s)
        except KafkaException as exc:
            self._admin.poll(0)  # serves the error callbacks queued meanwhile (an authentication failure)
            if self._security_error is not None:
                raise BrokerUnavailableError(
                    f"the Kafka broker at {self._config.bootstrap_servers!r} refused the connection within "
                    f"{self._timeout_s:g}s: authentication or TLS failed ({self._security_error}); check kafka_config's "
                    "security.protocol, sasl.* (user, password, mechanism) and ssl.* (CA) settings") from exc
            raise BrokerUnavailableError(
                f"no Kafka broker answered at {self._config.bootstrap_servers!r} within {self._timeout_s:g}s "
                f"({exc.args[0]}); check bootstrap_servers and that the broker runs (scripts/kafka start)"
            ) from exc
        return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}

    def require_topics(self, topics: list[str], role: str) -> dict[str, int]:
        counts = self.partition_counts()
        missing = [t for t in topics if t not in counts]
        if missing:
            raise TopologyError(
                f"{role} topic(s) {missing} do not exist on {self._config.bootstrap_servers}; create them first "
                "(hotstate creates only its own changelog topics)"
            )
        return {t: counts[t] for t in topics}

    def ensure_changelogs(self, specs: list[ChangelogSpec]) -> None:
        """Create missing changelogs; an existing one with the wrong partition count or policy is an error."""
        counts = self.partition_counts()
        missing = [s for s in specs if s.topic not in counts]
        if missing:
            rf = self._config.replication_factor
            counts = self._create_topics("changelog", [
                NewTopic(s.topic, num_partitions=s.partitions, replication_factor=rf, config=_topic_config(s))
                for s in missing])
        for spec in specs:
            have = counts.get(spec.topic)
            if have != spec.partitions:
                raise TopologyError(
                    f"changelog topic {spec.topic!r} has {have} partitions but its source has {spec.partitions}; "
                    "a changelog must match its source partition for partition. Delete the changelog (its state "
                    "is rebuilt from the input) or restore the source's partition count"
                )
        self._check_policies(specs)

    def _create_topics(self, kind: str, new: list[NewTopic]) -> dict[str, int]:
        """Creates ``new`` (one already there is fine: a concurrent instance created it) and waits until the
        metadata knows them; returns the partition count of every topic, as ``partition_counts``."""
        for topic, fut in self._admin.create_topics(new, request_timeout=self._timeout_s).items():
            try:
                fut.result(timeout=self._timeout_s)
                log.info("created %s topic %s", kind, topic)
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    raise TopologyError(f"cannot create {kind} topic {topic!r}: {exc.args[0]}") from exc
        return self._wait_for_metadata({t.topic for t in new})

    def ensure_repartition_topics(self, specs: list[RepartitionTopicSpec]) -> None:
        """Creates the missing repartition topics; an existing one must have the expected partition count."""
        counts = self.partition_counts()
        missing = [s for s in specs if s.topic not in counts]
        if missing:
            rf = self._config.replication_factor
            counts = self._create_topics("repartition", [
                NewTopic(s.topic, num_partitions=s.partitions, replication_factor=rf,
                         config={"cleanup.policy": "delete", "retention.ms": "-1"}) for s in missing])
        for spec in specs:
            have = counts.get(spec.topic)
            if have != spec.partitions:
                raise TopologyError(
                    f"repartition topic {spec.topic!r} has {have} partitions where this topology needs "
                    f"{spec.partitions} (its upstream's partition count, or repartition(partitions=N)); with the "
                    "app stopped, delete the topic (hotstate creates it again) or pass the partition count it has")

    def delete_records(self, offsets: dict[tuple[str, int], int]) -> list:
        """Asks the brokers to delete the records below ``offsets`` (topic, partition -> offset), without
        waiting: returns the futures (``RepartitionPurger`` reads them later)."""
        if not offsets:
            return []
        futures = self._admin.delete_records([KTopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                             request_timeout=self._timeout_s)
        return list(futures.values())

    def ensure_dead_letter_topic(self, topic: str, partitions: int) -> None:
        """Creates ``dead_letter_topic`` if it is missing (``partitions`` partitions, the changelogs' replication
        factor, the broker's default cleanup policy); an existing one is used as it is."""
        if topic in self.partition_counts():
            return
        new = NewTopic(topic, num_partitions=partitions, replication_factor=self._config.replication_factor)
        fut = self._admin.create_topics([new], request_timeout=self._timeout_s)[topic]
        try:
            fut.result(timeout=self._timeout_s)
            log.info("created dead-letter topic %s with %d partitions", topic, partitions)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":  # a concurrent instance created it
                raise TopologyError(f"cannot create dead_letter_topic {topic!r}: {exc.args[0]}; create it "
                                    "yourself or fix the broker's permissions") from exc
        self._wait_for_metadata({topic})

    def _wait_for_metadata(self, topics: set[str]) -> dict[str, int]:
        """Topics just created can be missing from metadata (or lack leaders) for a moment: wait, bounded."""
        deadline = time.monotonic() + self._timeout_s
        delay = 0.05
        while True:
            md = self._admin.list_topics(timeout=self._timeout_s)
            ready = {name for name in topics
                     if name in md.topics and md.topics[name].error is None and md.topics[name].partitions
                     and all(p.leader >= 0 for p in md.topics[name].partitions.values())}
            if ready == topics:
                return {name: len(t.partitions) for name, t in md.topics.items() if t.error is None}
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"topics {sorted(topics - ready)} were created but have no leaders after "
                    f"{self._timeout_s:g}s; check the broker's health and retry")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _topic_configs(self, topics: list[str]) -> dict[str, dict]:
        """Each topic's configuration entries. On a cluster a topic just created can be unknown for a moment to
        the broker that answers (KRaft propagates metadata to each broker on its own; seen on the 3-node cluster
        of tests/chaos/test_cluster_node_kill.py): asked again, bounded by ``broker_timeout_ms``."""
        deadline = time.monotonic() + self._timeout_s
        delay = 0.05
        found: dict[str, dict] = {}
        while True:
            pending = [t for t in topics if t not in found]
            futures = self._admin.describe_configs([ConfigResource(ResourceType.TOPIC, t) for t in pending],
                                                   request_timeout=self._timeout_s)
            unknown = []
            for res, fut in futures.items():
                try:
                    found[res.name] = fut.result(timeout=self._timeout_s)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                        raise
                    unknown.append(res.name)
            if not unknown:
                return found
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _check_policies(self, specs: list[ChangelogSpec]) -> None:
        if not specs:
            return
        configs = self._topic_configs([s.topic for s in specs])
        for spec in specs:
            entries = configs[spec.topic]
            policy = entries["cleanup.policy"].value if "cleanup.policy" in entries else None
            if policy is None or set(policy.split(",")) != set(spec.cleanup_policy.split(",")):
                raise TopologyError(
                    f"changelog topic {spec.topic!r} has cleanup.policy={policy!r}, expected {spec.cleanup_policy!r}; "
                    f"fix it with kafka-configs --alter --entity-type topics --entity-name {spec.topic} "
                    f"--add-config cleanup.policy={spec.cleanup_policy}"
                )
            if spec.retention_ms is not None and "retention.ms" in entries:
                have = entries["retention.ms"].value
                if have != str(spec.retention_ms):
                    log.warning("changelog topic %s has retention.ms=%s where its store asks for %d (store retention "
                                "+ windowstore_changelog_additional_retention_ms); hotstate does not change it. Too "
                                "short loses windows a restore needs: kafka-configs --alter --entity-type topics "
                                "--entity-name %s --add-config retention.ms=%d", spec.topic, have, spec.retention_ms,
                                spec.topic, spec.retention_ms)


def _topic_config(spec: ChangelogSpec) -> dict[str, str]:
    config = {"cleanup.policy": spec.cleanup_policy}
    if spec.retention_ms is not None:
        config["retention.ms"] = str(spec.retention_ms)
    return config
