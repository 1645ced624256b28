"""What a ``processing_exception_handler`` callable receives and answers: Kafka Streams'
ProcessingExceptionHandler (KIP-1033), spelled the Python way.

``processing_exception_handler`` is ``"log_and_fail"`` (the default), ``"log_and_continue"``, or a callable::

    def handler(context: hotstate.ErrorHandlerContext, record: hotstate.Record,
                exception: Exception) -> hotstate.ProcessingHandlerResponse: ...

It is called on the processing thread when user code (a ``process`` function, a ``map`` lambda, an
aggregator, a serde of a sink or a store) raised while processing one input record. ``CONTINUE`` skips the
record (its offset counts as processed, ``dropped_records_total`` counts it); ``FAIL`` stops the app with a
``ProcessingError``. A handler that raises, or returns anything else, counts as ``FAIL``.

It is also called when a punctuation callback (``context.schedule``) raised, as Kafka Streams does for
punctuators: ``record`` is None and the context's topic is ``""``, partition and offset -1, timestamp the
punctuation's. ``CONTINUE`` skips that call (the schedule goes on; ``dropped_records_total`` counts it); ``FAIL``
stops the app with a ``PunctuationError``.

What the record wrote before the exception is not rolled back (as in Kafka Streams): store updates stay in
the task's uncommitted state and are committed with it, and records already forwarded to a sink are sent.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class ProcessingHandlerResponse(enum.Enum):
    """The answer of a ``processing_exception_handler`` callable."""

    CONTINUE = "CONTINUE"  # skip the record and go on with the next one
    FAIL = "FAIL"  # stop the app with a ProcessingError


@dataclass(frozen=True)
class ErrorHandlerContext:
    """Where the failed record came from (Kafka Streams' ErrorHandlerContext). ``source_raw_key`` and
    ``source_raw_value`` are the input record's bytes as consumed; ``headers`` its headers (a list of
    ``(name, bytes)`` or None)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    headers: Any
    task_id: str
    source_raw_key: bytes | None
    source_raw_value: bytes | None
