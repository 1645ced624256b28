"""Records the processing loop cannot use, and the main consumer's error events: ``BadRecords`` applies
``deserialization_exception_handler`` and ``processing_exception_handler``, writes the records a handler gives
up on to ``dead_letter_topic`` (Kafka Streams' KIP-1034 headers, values as UTF-8 strings), and logs non-fatal
consumer errors at a bounded rate. The task manager owns one and calls it from its loop."""
from __future__ import annotations

import logging
import traceback
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException

from ..config import LOG_AND_CONTINUE, LOG_AND_FAIL, Config
from ..errors import DeserializationError, ProcessingError, PunctuationError, StoreCorruptedError
from ..handlers import ErrorHandlerContext, ProcessingHandlerResponse
from ..observe.metrics import Metrics
from ..observe.rate_limited import RateLimitedLog
from ..records import Record, TopicPartition

log = logging.getLogger(__name__)

HEADER_EXCEPTION = "__streams.errors.exception"
HEADER_MESSAGE = "__streams.errors.message"
HEADER_STACKTRACE = "__streams.errors.stacktrace"
HEADER_TOPIC = "__streams.errors.topic"
HEADER_PARTITION = "__streams.errors.partition"
HEADER_OFFSET = "__streams.errors.offset"


def exception_name(exc: BaseException) -> str:
    """The class's qualified name, with its module unless it is a builtin (like Java's getClass().getName())."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def dead_letter_headers(original: Any, exc: BaseException, topic: str, partition: int,
                        offset: int) -> list[tuple[str, bytes]]:
    """The input record's own headers, then the six ``__streams.errors.*`` headers."""
    stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    added = [(HEADER_EXCEPTION, exception_name(exc)), (HEADER_MESSAGE, str(exc)), (HEADER_STACKTRACE, stack),
             (HEADER_TOPIC, topic), (HEADER_PARTITION, str(partition)), (HEADER_OFFSET, str(offset))]
    return list(original or ()) + [(name, text.encode("utf-8", "backslashreplace")) for name, text in added]


def error_context(msg: Any, task_id: str) -> ErrorHandlerContext:
    return ErrorHandlerContext(msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1], msg.headers(),
                               task_id, msg.key(), msg.value())


def ask_handler(handler: Callable[..., Any], context: ErrorHandlerContext, record: Record | None,
                exc: Exception) -> tuple[ProcessingHandlerResponse, BaseException | None]:
    """The handler's answer, and what it raised. A handler that raises, or answers anything but a
    ProcessingHandlerResponse, counts as FAIL."""
    try:
        response = handler(context, record, exc)
    except Exception as handler_exc:
        log.error("processing_exception_handler raised on the record at %s[%d]@%d; counts as FAIL",
                  context.topic, context.partition, context.offset, exc_info=handler_exc)
        return ProcessingHandlerResponse.FAIL, handler_exc
    if isinstance(response, ProcessingHandlerResponse):
        return response, None
    bad = TypeError(f"processing_exception_handler returned {response!r}; return "
                    "hotstate.ProcessingHandlerResponse.CONTINUE or hotstate.ProcessingHandlerResponse.FAIL")
    log.error("%s (counts as FAIL)", bad)
    return ProcessingHandlerResponse.FAIL, bad


class BadRecords:
    """``produce(topic, key, value, timestamp, headers=...)``: the task manager's producer (under exactly-once
    the transactional one, so a dead-letter record is in the transaction of the skip)."""

    ERROR_LOG_EVERY_S = 10.0

    def __init__(self, config: Config, metrics: Metrics, produce: Callable[..., None]):
        self._config = config
        self._metrics = metrics
        self._produce = produce
        self._skip_undecodable = config.deserialization_exception_handler == LOG_AND_CONTINUE
        self._error_log = RateLimitedLog(log, self.ERROR_LOG_EVERY_S)

    def error_event(self, err: KafkaError) -> None:
        """A non-fatal error event of the main consumer (brokers down, a connection lost, ...): librdkafka
        retries by itself, so it is logged, at most once per ``ERROR_LOG_EVERY_S`` per error code."""
        self._error_log.warning(err.code(), "main consumer: %s (librdkafka retries; processing goes on)", err)

    def undecodable(self, task: Any, msg: Any, what: str, exc: Exception) -> None:
        """A record the source serdes cannot decode: deserialization_exception_handler decides."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        error = DeserializationError(topic, partition, offset, what, exc)
        self._dead_letter(msg, exc)
        if not self._skip_undecodable:
            raise error from exc
        log.warning("skipping record: %s", error)
        self._metrics.skipped_records_total += 1
        self._metrics.dropped_records_total += 1
        task.processed(TopicPartition(topic, partition), offset)

    def processing_failed(self, task: Any, msg: Any, key: Any, value: Any, exc: Exception) -> None:
        """User code raised on this record: processing_exception_handler decides. FAIL raises ProcessingError;
        CONTINUE skips the record (its offset counts as processed). Either way the record goes to the dead-letter
        topic, if one is set (Kafka Streams does the same for its log-and-fail handlers). Store writes and
        outputs the record made before the exception are kept, as in Kafka Streams."""
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if isinstance(exc, (KafkaException, StoreCorruptedError)):  # the producer or a store failed, not the
            raise ProcessingError(topic, partition, offset, exc) from exc  # record: never skipped
        response, handler_error = self._processing_response(
            lambda handler: ask_handler(handler, error_context(msg, task.id),
                                        Record(key, value, msg.timestamp()[1], msg.headers(), topic, partition, offset),
                                        exc))
        self._dead_letter(msg, exc)
        if response is not ProcessingHandlerResponse.CONTINUE:
            raise ProcessingError(topic, partition, offset, exc, handler_error) from exc
        log.warning("skipping record at %s[%d]@%d: processing it raised %r (processing_exception_handler says "
                    "continue)", topic, partition, offset, exc, exc_info=exc)
        self._metrics.dropped_records_total += 1
        task.processed(TopicPartition(topic, partition), offset)

    def _processing_response(self, ask: Callable[[Any], tuple]) -> tuple:
        """processing_exception_handler's answer, with the error the handler itself raised (or None): the named
        handlers answer at once, a callable one is asked through ``ask(handler)``."""
        handler = self._config.processing_exception_handler
        if handler == LOG_AND_CONTINUE:
            return ProcessingHandlerResponse.CONTINUE, None
        if handler == LOG_AND_FAIL:
            return ProcessingHandlerResponse.FAIL, None
        return ask(handler)

    def punctuation_failed(self, task_id: str, punctuation: str, timestamp: int, exc: Exception) -> None:
        """A punctuation callback raised: processing_exception_handler decides, with no record and a context
        whose topic is "" and partition and offset -1 (Kafka Streams does the same for punctuators). FAIL raises
        PunctuationError; CONTINUE skips that callback this time (``dropped_records_total`` counts it) and the
        schedule goes on. Nothing goes to the dead-letter topic: there is no input record."""
        if isinstance(exc, KafkaException):  # the producer failed, not the callback
            raise PunctuationError(task_id, punctuation, timestamp, exc) from exc
        response, handler_error = self._processing_response(
            lambda handler: ask_handler(handler, ErrorHandlerContext("", -1, -1, timestamp, None, task_id, None, None),
                                        None, exc))
        if response is not ProcessingHandlerResponse.CONTINUE:
            raise PunctuationError(task_id, punctuation, timestamp, exc, handler_error) from exc
        log.warning("task %s: a %s punctuation at %d raised %r; processing_exception_handler says continue",
                    task_id, punctuation, timestamp, exc, exc_info=exc)
        self._metrics.dropped_records_total += 1

    def _dead_letter(self, msg: Any, exc: BaseException) -> None:
        """The record as consumed (key, value, headers, timestamp) plus the __streams.errors.* headers, to
        dead_letter_topic; under exactly-once inside the open transaction, with the skip."""
        topic = self._config.dead_letter_topic
        if topic is None:
            return
        headers = dead_letter_headers(msg.headers(), exc, msg.topic(), msg.partition(), msg.offset())
        self._produce(topic, msg.key(), msg.value(), max(msg.timestamp()[1], 0), headers=headers)
        self._metrics.dead_letter_records_total += 1
