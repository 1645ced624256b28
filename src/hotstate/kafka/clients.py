"""Factories for the librdkafka clients hotstate uses. User overrides come last and win: ``kafka_config``
(every client) over hotstate's defaults, the per-client dicts (``consumer_config``, ...) over both."""
from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer

from ..config import Config

_log = logging.getLogger(__name__)

# librdkafka's own log lines go through Python logging instead of stderr.
LIBRDKAFKA_LOG = logging.getLogger("hotstate.librdkafka")
# How long a client waits at most before reconnecting to a broker that went away. librdkafka's default
# (10 s) made recovery after a broker restart take 1 to 14 s; the Java clients' default is 1 s.
RECONNECT_BACKOFF_MAX_MS = 1000
# The transactional producer: librdkafka 2.16 can keep a group coordinator in its cache after that broker left
# the metadata (a node gone, or a restart) and then never sends ``send_offsets_to_transaction``'s request:
# the request waits for a broker state change to look again, and its timeout is not checked (librdkafka
# issues 5511 and 5456). Measured on a 3-node cluster whose coordinating node is killed
# (tests/chaos/test_cluster_node_kill.py::test_a_transactional_producer_finds_its_group_coordinator_again_after_
# that_node_is_gone; docs/faults.md): with librdkafka's defaults calls stayed stuck in 2 of 2 runs, with these
# in 0 of 3. Idle connections closing and the frequent metadata refresh give the broker state changes that
# make the request look again; the short cache age makes that look a FindCoordinator. Cost: a metadata
# request per transactional producer every 5 s, and a reconnect after 5 s without traffic.
# Every client: a partition whose leader librdkafka lost during a broker restart (delegated to its internal
# broker, the fetch waiting in validate-epoch-wait for a leader) was seen to stay there for good: the leader
# queries it logs ("broker is internal: re-query") sent no metadata request, and the next one came with the
# periodic refresh (300 s by default). Seen as a main consumer that stopped fetching two of its partitions
# after ``scripts/kafka restart`` (4 of 22 runs of tests/chaos/test_broker_restart.py under load; docs/faults.md).
# A refresh every 5 s, and cached metadata aged out after 15 s, bound that to seconds. Cost: one metadata
# request per client every 5 s.
METADATA_REFRESH_SETTINGS: dict[str, Any] = {
    "topic.metadata.refresh.interval.ms": 5000,
    "metadata.max.age.ms": 15000,
}
TRANSACTIONAL_PRODUCER_COORDINATOR_SETTINGS: dict[str, Any] = {
    "connections.max.idle.ms": 5000,
    **METADATA_REFRESH_SETTINGS,
}


# learn_leaders: at most this long per topic. librdkafka would find the leaders by itself on its next topic scan
# (once a second), so waiting longer gains nothing.
LEARN_LEADERS_TIMEOUT_S = 1.0


def learn_leaders(consumer: Consumer, topics: Any) -> None:
    """Asks the broker now for the leaders of ``topics``' partitions. A consumer assigned partitions of a topic
    it has no metadata for starts fetching them only after its next periodic topic scan, up to 1 s later
    (measured: restores of a cold start began 0.9 s after their assign, bench/restore.py --timeline); the
    metadata request this makes gives it the leaders at once. Best effort: a failure is logged and the
    consumer's own scan finds them as before."""
    for topic in sorted(set(topics)):
        try:
            consumer.list_topics(topic, timeout=LEARN_LEADERS_TIMEOUT_S)
        except KafkaException as exc:
            _log.info("asking for the leaders of %s failed (%s); the consumer finds them itself", topic,
                      exc.args[0] if exc.args else exc)


def admin_settings(config: Config, client_id_suffix: str = "admin") -> dict[str, Any]:
    """An AdminClient's settings: the bootstrap servers, ``kafka_config`` and hotstate's logger."""
    return {"bootstrap.servers": config.bootstrap_servers, "client.id": f"{config.app_id}-{client_id_suffix}",
            "logger": LIBRDKAFKA_LOG, **config.kafka_config}


def main_consumer(config: Config, **callbacks: Any) -> Consumer:
    """Assigned by hand what the group member (runtime/membership.py) owns; ``group.id`` only serves the
    committed offsets a newly assigned partition starts from."""
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        # A fetch parked at the broker delays requests queued behind it on the same connection
        # (offset commits, watermark queries): keep the park short.
        "fetch.wait.max.ms": 100,
        "client.id": f"{config.app_id}-main",
        "logger": LIBRDKAFKA_LOG,
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        **METADATA_REFRESH_SETTINGS,
        **config.kafka_config,
        **callbacks,
        **config.consumer_config,
    }
    return Consumer(conf)


def restore_consumer(config: Config) -> Consumer:
    """Manual assignment only: it never joins the group nor commits (group.id is required by librdkafka)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": f"{config.app_id}-restore-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 50,  # see main_consumer: watermark queries queue behind a parked fetch
        # Bytes held: the prefetch queue, overshot by at most one fetch.
        "queued.max.messages.kbytes": max(1024, config.restore_fetch_buffer_bytes_max // 1024),
        "fetch.max.bytes": max(1024 * 1024, min(64 * 1024 * 1024, config.restore_fetch_buffer_bytes_max)),
        "max.partition.fetch.bytes": max(1024 * 1024, min(8 * 1024 * 1024, config.restore_fetch_buffer_bytes_max)),
        # Once the queue is full librdkafka waits this long before fetching again; its default of 1000 ms
        # idles the restore (measured: 2.6x slower restores, docs/benchmarks.md).
        "fetch.queue.backoff.ms": 10,
        "client.id": f"{config.app_id}-restore",
        "logger": LIBRDKAFKA_LOG,
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        **METADATA_REFRESH_SETTINGS,
        **config.kafka_config,
        **config.restore_consumer_config,
    }
    return Consumer(conf)


def group_offsets_consumer(config: Config) -> Consumer:
    """Reads the app group's committed offsets (where a table's restore from its source topic ends); never
    subscribes, assigns or commits. ``read_committed``: librdkafka then asks for stable offsets, so an offset
    commit inside an open transaction is waited for, not read."""
    return Consumer({
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "client.id": f"{config.app_id}-group-offsets",
        "logger": LIBRDKAFKA_LOG,
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        **METADATA_REFRESH_SETTINGS,
        **config.kafka_config,
        **config.restore_consumer_config,
    })


def global_consumer(config: Config) -> Consumer:
    """The global thread's consumer (runtime/global_thread.py): every partition of the global tables' topics,
    assigned by hand, never in the group. ``read_committed`` under exactly-once, ``read_uncommitted`` otherwise
    (Kafka Streams' global consumer follows the app's isolation level the same way)."""
    return Consumer({
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": f"{config.app_id}-global-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed" if config.exactly_once else "read_uncommitted",
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 50,
        "queued.max.messages.kbytes": max(1024, config.restore_fetch_buffer_bytes_max // 1024),
        "fetch.max.bytes": max(1024 * 1024, min(64 * 1024 * 1024, config.restore_fetch_buffer_bytes_max)),
        "max.partition.fetch.bytes": max(1024 * 1024, min(8 * 1024 * 1024, config.restore_fetch_buffer_bytes_max)),
        "fetch.queue.backoff.ms": 10,  # as the restore consumer: the bootstrap is a restore
        "client.id": f"{config.app_id}-global",
        "logger": LIBRDKAFKA_LOG,
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        **METADATA_REFRESH_SETTINGS,
        **config.kafka_config,
        **config.restore_consumer_config,
    })


def tail_consumer(config: Config) -> Consumer:
    """Reads the last few committed records of a windowed changelog for their timestamps (the retention-aware
    restore, runtime/live_restore.py): ``read_committed``, small fetches, assigned by hand."""
    return Consumer({
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": f"{config.app_id}-restore-unused",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "fetch.wait.max.ms": 50,
        "max.partition.fetch.bytes": 1024 * 1024,
        "client.id": f"{config.app_id}-changelog-tail",
        "logger": LIBRDKAFKA_LOG,
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        **METADATA_REFRESH_SETTINGS,
        **config.kafka_config,
        **config.restore_consumer_config,
    })


def end_offsets_consumer(config: Config) -> Consumer:
    """Asks only for changelog end offsets (high watermarks). ``read_uncommitted`` on purpose: a
    ``read_committed`` consumer is told the last stable offset, which an open transaction (a zombie's)
    holds back while committed records may follow it; a restore that stopped there would miss them."""
    return Consumer({
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": f"{config.app_id}-restore-unused",
        "enable.auto.commit": False,
        "isolation.level": "read_uncommitted",
        "client.id": f"{config.app_id}-ends",
        "logger": LIBRDKAFKA_LOG,
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        **METADATA_REFRESH_SETTINGS,
        **config.kafka_config,
        **config.restore_consumer_config,
    })


def producer(config: Config, transactional_id: str | None = None, **callbacks: Any) -> Producer:
    """Idempotent always; transactional (exactly-once) when ``transactional_id`` is given."""
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap_servers,
        "enable.idempotence": True,
        "linger.ms": 5,
        "partitioner": "murmur2_random",  # the Java client's default for keyed records
        "client.id": f"{config.app_id}-producer",
        "logger": LIBRDKAFKA_LOG,
        "reconnect.backoff.max.ms": RECONNECT_BACKOFF_MAX_MS,
        **METADATA_REFRESH_SETTINGS,
        **callbacks,
    }
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
        conf["transaction.timeout.ms"] = config.transaction_timeout_ms
        conf.update(TRANSACTIONAL_PRODUCER_COORDINATOR_SETTINGS)
    conf.update(config.kafka_config)
    conf.update(config.producer_config)
    return Producer(conf)


def produce(producer: Producer, topic: str, value: bytes | None, key: bytes | None, **kwargs: Any) -> None:
    """``producer.produce`` that waits while librdkafka's local queue is full (BufferError), serving
    delivery reports meanwhile, instead of failing."""
    while True:
        try:
            producer.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)
