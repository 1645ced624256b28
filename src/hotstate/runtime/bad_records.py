"""Records a handler gives up on: what a ``processing_exception_handler`` callable answers, and the headers of
their dead-letter records (Kafka Streams' KIP-1034 names, values as UTF-8 strings). Pure functions; the task
manager calls them."""
from __future__ import annotations

import logging
import traceback
from typing import Any, Callable

from ..handlers import ErrorHandlerContext, ProcessingHandlerResponse
from ..records import Record

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


def ask_handler(handler: Callable[..., Any], context: ErrorHandlerContext, record: Record,
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
