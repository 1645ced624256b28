"""Factories for the librdkafka clients hotstate uses. User overrides come last and win."""
from __future__ import annotations

from typing import Any

from confluent_kafka import Consumer, Producer

from ..config import Config


def main_consumer(config: Config, **callbacks: Any) -> Consumer:
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap_servers,
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": config.session_timeout_ms,
        "client.id": f"{config.app_id}-main",
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
        "fetch.max.bytes": 64 * 1024 * 1024,
        "max.partition.fetch.bytes": 8 * 1024 * 1024,
        "queued.max.messages.kbytes": 256 * 1024,
        "client.id": f"{config.app_id}-restore",
        **config.restore_consumer_config,
    }
    return Consumer(conf)


def producer(config: Config, **callbacks: Any) -> Producer:
    conf: dict[str, Any] = {
        "bootstrap.servers": config.bootstrap_servers,
        "enable.idempotence": True,
        "linger.ms": 5,
        "partitioner": "murmur2_random",  # the Java client's default for keyed records
        "client.id": f"{config.app_id}-producer",
        **callbacks,
        **config.producer_config,
    }
    return Producer(conf)
