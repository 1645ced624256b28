"""Records larger than Kafka allows: librdkafka's MSG_SIZE_TOO_LARGE becomes a ``RecordTooLargeError`` that
names the store (or topic), the key, the size, the limit and what to do.

Two places refuse a record. The producer refuses one larger than its ``message.max.bytes`` (librdkafka's
default 1000000) at ``produce()``. The broker refuses a batch larger than the topic's ``max.message.bytes``
(broker default 1048588); librdkafka then fails every record of that batch with the same error (it does not
split batches), so the largest of them is the one named. Neither is retried: the same value fails the same
way, so the app stops with the error (under exactly-once the transaction is aborted, nothing of it is
visible). Kafka Streams' ProductionExceptionHandler, which could skip such records, is not built.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from confluent_kafka import KafkaError, KafkaException

from ..errors import RecordTooLargeError

log = logging.getLogger(__name__)

PRODUCER_MESSAGE_MAX_BYTES_DEFAULT = 1_000_000  # librdkafka's message.max.bytes
_KEY_SHOWN_MAX = 80


def is_too_large(exc: BaseException | KafkaError | None) -> bool:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    return isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE


def record_size(key: bytes | None, value: bytes | None, headers: Any = None) -> int:
    size = len(key or b"") + len(value or b"")
    for name, data in headers or ():
        size += len(name) + len(data or b"")
    return size


@dataclass(frozen=True)
class Rejected:
    """One record the broker refused as too large (from a delivery report)."""

    topic: str
    partition: int
    key: bytes | None
    size: int


def _show_key(key: bytes | None) -> str:
    text = repr(key)
    return text if len(text) <= _KEY_SHOWN_MAX else text[:_KEY_SHOWN_MAX] + "...'"


class RecordSizeLimits:
    """Builds the errors. ``changelog_stores``: changelog topic -> store name; ``topic_limit(topic)``: the
    topic's max.message.bytes (None if unknown), asked only when an error is built."""

    def __init__(self, changelog_stores: dict[str, str], producer_max_bytes: int = PRODUCER_MESSAGE_MAX_BYTES_DEFAULT,
                 topic_limit: Callable[[str], int | None] | None = None, bootstrap: str = "<bootstrap>"):
        self._stores = dict(changelog_stores)
        self._producer_max = producer_max_bytes
        self._topic_limit = topic_limit or (lambda topic: None)
        self._bootstrap = bootstrap

    @classmethod
    def from_config(cls, config: Any, store_names: Iterable[str]) -> "RecordSizeLimits":
        def topic_limit(topic: str) -> int | None:
            return describe_max_message_bytes(config, topic)
        try:
            producer_max = int({**config.kafka_config, **config.producer_config}.get("message.max.bytes", PRODUCER_MESSAGE_MAX_BYTES_DEFAULT))
        except (TypeError, ValueError):
            producer_max = PRODUCER_MESSAGE_MAX_BYTES_DEFAULT
        return cls({config.changelog_topic(s): s for s in store_names}, producer_max, topic_limit,
                   config.bootstrap_servers)

    def _what(self, topic: str, key: bytes | None) -> tuple[str, str | None]:
        store = self._stores.get(topic)
        if store is not None:
            return f"store {store!r}: the changelog record of key {_show_key(key)}", store
        return f"the record of key {_show_key(key)} to topic {topic!r}", None

    def producer_error(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
                       headers: Any = None) -> RecordTooLargeError:
        """The producer refused the record at produce(): larger than its message.max.bytes."""
        size = record_size(key, value, headers)
        what, store = self._what(topic, key)
        smaller = "the value" if store is None else "the store's values"
        message = (f"{what} is {size} bytes, more than the producer allows (message.max.bytes="
                   f"{self._producer_max}). Make {smaller} smaller, or raise the limit with "
                   f"producer_config={{'message.max.bytes': ...}} (and the topic's max.message.bytes, if lower). "
                   "The app stops; until then it fails the same way on this record after every restart")
        return RecordTooLargeError(message, topic, partition, key, size, self._producer_max, store)

    def broker_error(self, rejected: list[Rejected]) -> RecordTooLargeError:
        """The broker refused batches holding these records: larger than the topic's max.message.bytes."""
        worst = max(rejected, key=lambda r: r.size)
        limit = self._topic_limit(worst.topic)
        what, store = self._what(worst.topic, worst.key)
        smaller = "the value" if store is None else "the store's values"
        shown = "unknown" if limit is None else str(limit)
        where = "the topic" if store is None else f"changelog topic {worst.topic!r}"
        message = f"{what} ({worst.size} bytes) was refused by the broker: {where} allows max.message.bytes={shown}"
        if len(rejected) > 1:
            message += f" ({len(rejected)} records of the same batches were refused with it)"
        if limit is not None and worst.size <= limit:
            message += (". The broker checks whole batches: lower the producer's batch size below the limit "
                        "(producer_config={'batch.size': ...}), or raise the topic's max.message.bytes")
        else:
            message += (f". Make {smaller} smaller, or raise the topic's limit: kafka-configs --bootstrap-server "
                        f"{self._bootstrap} --alter --entity-type topics --entity-name {worst.topic} "
                        f"--add-config max.message.bytes=<bytes>")
        message += ". The app stops; until then it fails the same way on this record after every restart"
        return RecordTooLargeError(message, worst.topic, worst.partition, worst.key, worst.size, limit, store)


def describe_max_message_bytes(config: Any, topic: str) -> int | None:
    """The topic's max.message.bytes, or None if the broker does not say within broker_timeout_ms."""
    from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

    from .clients import admin_settings

    timeout_s = config.broker_timeout_ms / 1000
    try:
        admin = AdminClient(admin_settings(config))
        res = ConfigResource(ResourceType.TOPIC, topic)
        entries = admin.describe_configs([res], request_timeout=timeout_s)[res].result(timeout=timeout_s)
        entry = entries.get("max.message.bytes")
        return None if entry is None or entry.value is None else int(entry.value)
    except Exception as exc:  # the error is being reported anyway: say "unknown" rather than hide it
        log.warning("cannot read max.message.bytes of topic %s (%s)", topic, exc)
        return None
