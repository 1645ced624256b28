"""hotstate's errors: each one tells the caller what to do.

- ``ConfigError``: fix the configuration (invalid or inconsistent values).
- ``TopologyError``: fix the topology or the topics it needs (missing source topic,
  changelog with the wrong partition count or cleanup policy).
- ``BrokerUnavailableError``: retry later, or check ``bootstrap_servers``.
- ``DeserializationError``: fix the input, or set ``deserialization_exception_handler="log_and_continue"``.
- ``StateDirError``: fix the permissions or the path of ``state_dir``.
- ``StoreCorruptedError``: the local store cannot be used; hotstate wipes it and restores from the changelog.
- ``StoreIOError``: the disk failed a store operation (full, too many open files, EIO); the store is kept:
  fix the disk or the limit and start again.
- ``ProcessingError``: user code raised while processing a record; the app stops (at-least-once: the
  record is processed again after a restart), unless ``processing_exception_handler`` says to continue.
- ``PunctuationError``: a punctuation callback (``context.schedule``) raised; the app stops without committing
  (as for a ``ProcessingError``: the work since the last commit is redone after a restart), unless
  ``processing_exception_handler`` says to continue.
- ``RecordTooLargeError``: a store value or an output record is larger than its topic (or the producer)
  allows; raise the limit or make the value smaller. The app stops.
- ``SnapshotStoreError``: the object store holding snapshots failed a request (unreachable, timed out, an
  error answer); snapshots retry with backoff and restores fall back to the changelog: check
  ``snapshot_store`` and its options. ``SnapshotStoreDeniedError``: it refused the credentials: fix the
  AWS_* environment or the bucket policy.
"""
from __future__ import annotations


class HotstateError(Exception):
    """Base class of every error hotstate raises on purpose."""


class ConfigError(HotstateError, ValueError):
    """A configuration value is invalid. Fix the value named in the message."""


class TopologyError(HotstateError):
    """The topology or a topic it needs is not usable as it stands. The message says what to change."""


class BrokerUnavailableError(HotstateError):
    """No Kafka broker answered within the timeout. Check bootstrap_servers and that the broker runs."""


class StateDirError(HotstateError):
    """The state directory cannot be created, written or locked."""


class StoreCorruptedError(HotstateError):
    """A local store cannot be opened or read consistently; it must be wiped and restored."""


class StoreIOError(HotstateError):
    """The operating system failed a store operation (disk full, too many open files, an I/O error). The
    store is not corrupt and is never wiped for this: free space or raise the limit, then start again."""


class StoreClosedError(HotstateError):
    """A store was queried after its task closed (moved away by a rebalance, or the app is closing).
    Query again once the app is RUNNING."""

    @classmethod
    def of(cls, store: str) -> "StoreClosedError":
        return cls(f"store {store} is closed (its task moved away or the app is closing); "
                   "query again after the rebalance")


class DeserializationError(HotstateError):
    """A record could not be decoded. Carries the topic, partition and offset of the record."""

    def __init__(self, topic: str, partition: int, offset: int, what: str, cause: BaseException):
        self.topic, self.partition, self.offset = topic, partition, offset
        super().__init__(
            f"cannot deserialize the {what} of the record at {topic}[{partition}]@{offset}: {cause!r}. "
            "Fix the producer or the serde, or set deserialization_exception_handler='log_and_continue' "
            "to skip such records"
        )


class PunctuationError(HotstateError):
    """A punctuation callback raised and ``processing_exception_handler`` said FAIL (the default). Carries the task
    id, the punctuation type and its timestamp; ``__cause__`` is what the callback raised, ``handler_error`` what
    a handler callable raised (if it did). The app stops; fix the callback and start it again."""

    def __init__(self, task_id: str, punctuation: str, timestamp: int, cause: BaseException,
                 handler_error: BaseException | None = None):
        self.task_id, self.punctuation, self.timestamp = task_id, punctuation, timestamp
        self.handler_error = handler_error
        super().__init__(f"task {task_id}: a {punctuation} punctuation at {timestamp} raised {cause!r}; the app "
                         "stops. Fix the callback given to context.schedule(...), or set processing_exception_handler "
                         "to skip failed punctuations, and start the app again")


class ProcessingError(HotstateError):
    """User code raised while processing a record. Carries the topic, partition and offset; ``__cause__`` is
    what user code raised, ``handler_error`` what a ``processing_exception_handler`` callable raised (if it did)."""

    def __init__(self, topic: str, partition: int, offset: int, cause: BaseException,
                 handler_error: BaseException | None = None):
        self.topic, self.partition, self.offset = topic, partition, offset
        self.handler_error = handler_error
        if handler_error is not None:
            hint = (f"; the processing_exception_handler then failed too ({handler_error!r}), which counts as "
                    "'fail'")
        else:
            hint = ("; fix the code or the input, or set processing_exception_handler='log_and_continue' "
                    "(or a callable) to skip such records")
        super().__init__(f"processing the record at {topic}[{partition}]@{offset} failed: {cause!r}{hint}")


class RecordTooLargeError(HotstateError):
    """A record hotstate produces (a store's changelog record, an output or a dead-letter record) is larger
    than the topic's ``max.message.bytes`` or the producer's ``message.max.bytes``. Carries ``topic``,
    ``partition``, ``key`` (bytes), ``size`` (bytes), ``limit`` (bytes, None if unknown) and ``store`` (the
    store whose changelog it is, or None)."""

    def __init__(self, message: str, topic: str, partition: int, key: bytes | None, size: int,
                 limit: int | None, store: str | None = None):
        self.topic, self.partition, self.key, self.size, self.limit, self.store = topic, partition, key, size, limit, store
        super().__init__(message)


class IllegalStateTransition(HotstateError):
    """A lifecycle moved along an edge its transition table does not have: a bug in hotstate."""


class SnapshotStoreError(HotstateError):
    """The object store that holds snapshots failed a request. Processing never stops for it: snapshots are
    retried with backoff, a restore falls back to the changelog. The message names the store (never a
    credential) and what to check."""


class SnapshotStoreDeniedError(SnapshotStoreError):
    """The object store refused the request's credentials or permissions: fix the AWS_* environment
    variables (or the role) or the bucket policy; retrying alone will not help."""
