"""The commit protocols, in numbered steps, with what a crash right after each step leaves.

At-least-once (``AtLeastOnceCommitter.commit``):

0. ``flush`` (only when stores have uncommitted entries): the output records produced while processing
   are delivered first, so a changelog record is never in Kafka without the output of the updates it
   holds. Without it a kill could leave the changelog (hence a standby or a restore) ahead of the output:
   the reprocessed record then counts on from the newer state, and the output skips a value.
1. ``send_changelogs``: every store's uncommitted entries go to the producer, one record per key, to
   the store's changelog partition. Skipped, with every later step, when the member knows it has no
   generation: its offsets would be refused, so it sends nothing and ends as a refused 3 does. Crash:
   some may reach the changelog; stores and input offsets are unchanged. Restart restores those records
   too: the store then holds updates whose input is processed again (duplicates, allowed under
   at-least-once).
2. ``flush``: the producer delivers changelog and output records (idempotent, acks=all) and reports
   each changelog partition's last offset. Crash: as after 1, with every record in Kafka.
3. ``commit_offsets``: input offsets committed synchronously by the group member, fenced by its
   generation. Crash: the stores are behind their changelogs; restore replays the tail after the stored
   offset, and nothing is lost or repeated. Refused because the member is stale (``_STALE_MEMBER``: a
   zombie frozen past its session, or a rebalance it missed): the stores keep their offsets, the writes
   are dropped and ``TaskMigrated`` tells the caller to close every task as lost (the changelog may now
   hold records the store lacks, so no task may go on). A transient failure: logged, and step 4 runs (the
   input since the last commit is processed again). Inside a rebalance callback the commit is deferred
   (still a member) and step 4 runs.
4. ``write_stores``: per store, the entries and the new changelog offset in one atomic RocksDB write.
   Crash: nothing lost, nothing repeated.

Exactly-once v2 (``ExactlyOnceCommitter.commit``), inside the transaction opened by ``begin``:

1. ``send_changelogs``: as above, inside the transaction. Crash: the transaction is aborted (at once by
   the restarted instance's ``init_transactions``, else after ``transaction_timeout_ms``): its records
   are invisible to ``read_committed`` readers; stores never saw them (they live in the overlay).
2. ``flush``: records delivered, changelog offsets known. Crash: as after 1.
3. ``send_offsets``: input offsets join the transaction with the consumer's group metadata
   (generation-fenced: a zombie that lost its partitions fails here or in 4). Crash: as after 1.
4. ``commit_transaction``: output, changelog records and input offsets become visible atomically.
   Crash: stores are behind their changelogs (the overlay was lost); restore replays exactly the
   committed tail after the stored offset. Nothing is lost or doubled, and nothing is wiped.
   Failure (retried 3 times, or fatal): the outcome is unknown, since the coordinator may have written
   PrepareCommit. A new producer's ``init_transactions`` settles it (completes or aborts), and
   ``TransactionOutcomeUnknown`` tells the caller to restore the tasks as after a crash and rewind their
   inputs to the committed offsets read after it. A failure in 1-3 is a known abort: ``TransactionAborted``
   (or ``ProducerFenced``), the overlay is dropped and the inputs rewind. Steps 3 and 4 are bounded
   (``bounded_call``): a call librdkafka never returns from is given up after the call's own timeout + 5 s
   (``TransactionalProducerStuck``): the stuck client is abandoned, a new producer fences it and settles the
   transaction, and the tasks restore as after an unknown outcome (``TransactionOutcomeUnknown``).
5. ``write_stores``: overlay + changelog offset into RocksDB in one atomic write. Crash: nothing to repair.

Either way a store is never ahead of its changelog: its offset moves only after the records are durable
and the input offsets committed (at-least-once) or the transaction committed (exactly-once). See
docs/architecture.md.

A table's store (``app.table``: its changelog is its source topic) sends nothing in step 1; step 4 writes
its entries with the source partition's next offset, the input offset step 3 committed (or the transaction
step 4 committed). So its stored offset never passes the group's committed offset; a crash between commit
and store write leaves it behind, and the restore replays the source from it up to the committed offset
(``ChangelogReader``: a source changelog's restore ends there, as Kafka Streams' does).

``commit`` returns the tasks whose input it committed: their stores now hold committed state (covered by
the group's committed offsets, or by a committed transaction) at their changelog offsets, which is the only
state a snapshot may ship (runtime/snapshots.py). Under at-least-once a transient failure of step 3 still
writes the stores (step 4), and then no task is returned.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import TopicPartition as KTopicPartition

from ..kafka.clients import produce
from ..kafka.record_size import RecordSizeLimits, Rejected, is_too_large, record_size
from ..observe.metrics import Metrics
from ..state.window_store import key_timestamp, value_timestamp
from .task import Task, TaskStore

log = logging.getLogger(__name__)

Pending = dict[str, list[tuple[TaskStore, list]]]

# The group moved on without this member (a rebalance, or the broker forgot it, e.g. after a restart): its
# offsets are refused until it rejoins. Not a producer failure.
_STALE_MEMBER = frozenset({KafkaError.UNKNOWN_MEMBER_ID, KafkaError.ILLEGAL_GENERATION,
                           KafkaError.REBALANCE_IN_PROGRESS, KafkaError.FENCED_INSTANCE_ID})


class DeliveryTracker:
    """The producer's delivery callback: remembers the last offset per changelog partition and errors
    (records refused as too large, with their topic, key and size: ``kafka/record_size.py``)."""

    def __init__(self, changelog_topics: set[str], limits: RecordSizeLimits | None = None):
        self._changelogs = changelog_topics
        self.limits = limits or RecordSizeLimits({})
        self.last_offsets: dict[tuple[str, int], int] = {}
        self.errors: list[KafkaError] = []
        self.too_large: list[Rejected] = []

    def __call__(self, err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            self.errors.append(err)
            if is_too_large(err):
                self.too_large.append(Rejected(msg.topic(), msg.partition(), msg.key(),
                                               record_size(msg.key(), msg.value(), msg.headers())))
            return
        topic = msg.topic()
        if topic in self._changelogs:
            key = (topic, msg.partition())
            offset = msg.offset()
            if offset > self.last_offsets.get(key, -1):
                self.last_offsets[key] = offset

    def take_errors(self) -> list[KafkaError]:
        errors, self.errors, self.too_large = self.errors, [], []
        return errors

    def raise_errors(self) -> None:
        """Raises the first delivery error; records refused as too large become a RecordTooLargeError."""
        too_large = self.too_large
        errors = self.take_errors()
        if too_large:
            raise self.limits.broker_error(too_large)
        if errors:
            raise KafkaException(errors[0])


def is_fenced(exc: BaseException) -> bool:
    """A fatal error of the transactional producer: fenced (a newer epoch of our transactional id), or a
    transaction state the broker no longer accepts (INVALID_TXN_STATE after the coordinator aborted a
    transaction that outlived transaction_timeout_ms during a broker outage). We hold the state dir's
    lock, so no other live instance uses our transactional id: a new producer is the recovery."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and err.fatal()


# How long past its own timeout a transactional call may run before the producer is given up (see bounded_call).
HANG_GRACE_S = 5.0


class TransactionalProducerStuck(RuntimeError):
    """A transactional call did not return within its own timeout + ``HANG_GRACE_S``: librdkafka lost its
    request (see ``bounded_call``). The committer abandons that producer and goes on with a new one
    (``ExactlyOnceCommitter._abandon``); it is fatal only while ``ABANDON_MAX`` given-up calls are still inside
    their clients. ``thread`` is the thread the call runs on."""

    def __init__(self, message: str, thread: threading.Thread | None = None):
        super().__init__(message)
        self.thread = thread


def bounded_call(fn: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Runs ``fn`` (a transactional call) on a daemon thread and waits at most ``timeout_s + HANG_GRACE_S``
    for it (the committer passes the call's own timeout, 60 s in the app). librdkafka can ignore that timeout:
    a coordinator request whose broker left the metadata (a node gone, a restart) waits for a broker state
    change to be sent (librdkafka issues 5456 and 5511, open in 2.16; seen here as an exactly-once app whose
    stream thread hung after ``scripts/kafka restart``). hotstate's producer settings make such a request look
    again (``clients.TRANSACTIONAL_PRODUCER_COORDINATOR_SETTINGS``): after a restart calls were measured to
    return within 18-56 s, later than the transaction's timeout but inside this bound. So the bound is not the
    transaction's timeout (15 s before, which gave up calls that would have returned).

    On expiry it raises ``TransactionalProducerStuck``. The committer then abandons the stuck client (it cannot
    be destroyed while a thread is inside it) and settles the transaction with a new producer, whose
    ``init_transactions`` fences it: any request the stuck client sends later carries the old epoch and is
    refused (``ExactlyOnceCommitter._abandon``)."""
    result: list = []
    error: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            error.append(exc)
        finally:
            done.set()

    thread = threading.Thread(target=run, name=f"hotstate-{what}", daemon=True)
    thread.start()
    bound_s = timeout_s + HANG_GRACE_S
    if not done.wait(bound_s):
        raise TransactionalProducerStuck(
            f"exactly-once: {what} did not return within {bound_s:.0f}s (its own timeout is "
            f"{timeout_s:.0f}s): librdkafka lost the request, a known librdkafka defect after a broker restart or "
            "a broker's loss (librdkafka issues 5456, 5511)", thread)
    if error:
        raise error[0]
    return result[0]


class ProducerFenced(Exception):
    """The transactional producer failed fatally (see ``is_fenced``); its open transaction is aborted by the
    broker. The caller recreates the producer (``ExactlyOnceCommitter.recreate_producer``) and rewinds."""


class TransactionAborted(Exception):
    """The open transaction was aborted (fenced zombie, lost partitions, or a retriable broker failure).
    The caller drops uncommitted state and rewinds the input to the last committed offsets."""


class TransactionOutcomeUnknown(Exception):
    """``commit_transaction`` failed: the coordinator may have written PrepareCommit (then the new producer's
    ``init_transactions`` completes the commit) or not (it aborts). The producer was replaced, which settled it
    either way. The caller must not go on from in-memory state: it restores the tasks from their changelogs
    (``read_committed``) and rewinds their inputs to the group's committed offsets, read from now on."""


class TaskMigrated(Exception):
    """At-least-once: the offset commit was refused because this member is stale (the group moved on without
    it), or it knows it has no generation. The uncommitted writes are dropped and the stores keep their offsets;
    the caller closes every task as lost (its store may lack changelog records just sent) and rejoins."""


class Committer:
    def __init__(self, consumer: Consumer, producer: Producer, tracker: DeliveryTracker, metrics: Metrics,
                 timeout_s: float):
        self._consumer = consumer
        self.producer = producer
        self._tracker = tracker
        self._metrics = metrics
        self._timeout_s = timeout_s

    # ---- shared steps ----
    @staticmethod
    def pending(tasks: list[Task]) -> Pending:
        return {t.id: [(s, s.overlay.entries()) for s in t.stores.values()] for t in tasks}

    def send_changelogs(self, tasks: list[Task], pending: Pending) -> None:
        """A windowed store's records carry their update's event time (the value's 8-byte prefix) as their
        Kafka timestamp, which the broker's time-based retention and a time-based restore seek go by; its
        tombstones (merged sessions) carry the time at the end of their key (a window's start, a session's end),
        never later than the event time the store had reached; other stores' records take the producer's time."""
        producer = self.producer
        for task in tasks:
            for store, entries in pending[task.id]:
                if store.source_changelog:
                    continue  # a table's changelog is its source topic: its records are already there
                topic, partition = store.changelog
                windowed = store.windowed
                for key, value in entries:
                    try:
                        if windowed:
                            ts = value_timestamp(value) if value is not None else key_timestamp(key)
                            produce(producer, topic, value, key, partition=partition, timestamp=ts)
                        else:
                            produce(producer, topic, value, key, partition=partition)
                    except KafkaException as exc:
                        if is_too_large(exc):
                            raise self._tracker.limits.producer_error(topic, partition, key, value) from exc
                        raise

    def flush(self) -> None:
        remaining = self.producer.flush(self._timeout_s)
        if remaining:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT,
                                            f"{remaining} records not delivered within {self._timeout_s}s"))
        self._tracker.raise_errors()

    def write_stores(self, tasks: list[Task], pending: Pending) -> None:
        last = self._tracker.last_offsets
        for task in tasks:
            for store, entries in pending[task.id]:
                if not entries:
                    continue
                if store.source_changelog:
                    # A table's store holds its source partition up to the input offset this commit sent.
                    source_offset = task.next_offsets.get(store.changelog)
                    if source_offset is None:
                        raise RuntimeError(f"task {task.id}: table store {store.spec.name} has writes but its "
                                           f"source {store.changelog} has no processed offset")
                    # A store ahead of the committed offset (a promoted standby: see ChangelogReader
                    # ._plan_source_range) keeps its offset while the records up to it are processed again.
                    stored = store.backend.changelog_offset()
                    store.backend.write(entries, source_offset if stored is None else max(source_offset, stored))
                    store.overlay.clear()
                    continue
                offset = last.get((store.changelog.topic, store.changelog.partition))
                if offset is None:
                    raise RuntimeError(f"task {task.id}: no delivery report for changelog {store.changelog}")
                store.backend.write(entries, offset + 1)
                store.overlay.clear()

    @staticmethod
    def input_offsets(tasks: list[Task]) -> list[KTopicPartition]:
        """Every input of every task whose offset moved since its last commit (a task commits all its inputs)."""
        return [KTopicPartition(tp.topic, tp.partition, offset)
                for t in tasks for tp, offset in t.offsets_to_commit().items()]

    @staticmethod
    def mark_committed(tasks: list[Task]) -> None:
        for task in tasks:
            task.mark_committed()

    # ---- protocol ----
    def begin(self) -> None:
        """Called before records are produced (a no-op without transactions)."""

    def abort(self) -> None:
        """Drop what the open transaction holds (a no-op without transactions)."""

    def commit(self, tasks: list[Task]) -> list[Task]:
        """Returns the tasks whose input this commit committed (see the module docstring)."""
        raise NotImplementedError


class AtLeastOnceCommitter(Committer):
    def commit(self, tasks: list[Task]) -> list[Task]:
        pending = self.pending(tasks)
        dirty = any(entries for stores in pending.values() for _, entries in stores)
        if not self._has_generation():  # its offsets would be refused: send nothing, not even step 1
            if dirty or self.input_offsets(tasks):
                self._migrated(tasks, "this instance has no generation in the group right now (it is rejoining)")
            return []
        committing = [t for t in tasks if t.needs_commit()]
        if dirty:
            self.flush()  # 0
        self.send_changelogs(tasks, pending)  # 1
        self.flush()  # 2
        committed = self.commit_offsets(tasks)  # 3
        self.write_stores(tasks, pending)  # 4
        if committed:  # commit_total counts commits whose input offsets Kafka took
            self._metrics.commits_total += 1
        return committing if committed else []

    def commit_offsets(self, tasks: list[Task]) -> bool:
        """False when a transient failure left the offsets uncommitted."""
        offsets = self.input_offsets(tasks)
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            if err.code() in _STALE_MEMBER:
                self._migrated(tasks, f"the group refused this member's offset commit ({err})")
            # A transient failure (e.g. the coordinator moved): the stores take the writes, and the records
            # since the last commit are processed again (by the new owner, if the partitions move meanwhile).
            log.warning("committing input offsets failed (%s); the records since the last commit will be "
                        "processed again", err)
            return False
        self.mark_committed(tasks)
        return True

    def _has_generation(self) -> bool:
        check = getattr(self._consumer, "has_generation", None)  # the group member; a bare consumer has none
        return check is None or bool(check())

    @staticmethod
    def _migrated(tasks: list[Task], why: str) -> None:
        for task in tasks:
            task.drop_uncommitted()
        raise TaskMigrated(f"{why}: its tasks are closed as lost, their uncommitted writes dropped, and they start "
                           "again from their committed state once the member has rejoined")


class ExactlyOnceCommitter(Committer):
    """One transaction per commit interval; see the module docstring for the steps."""

    # A producer that keeps failing fatally is not a passing outage: give up after this many new producers
    # within the window, with the last error.
    RECREATE_MAX = 5
    RECREATE_WINDOW_S = 300.0
    # Producers given up inside a call librdkafka never returned from stay alive (a thread is inside each);
    # past this many in the process's life the app stops rather than leak more clients.
    ABANDON_MAX = 3
    INIT_TIMEOUT_S = 300.0

    def __init__(self, *args: Any, producer_factory: Any = None, clock: Any = time.monotonic,
                 call: Callable[[Callable[[], Any], float, str], Any] = bounded_call,
                 **kwargs: Any):
        """``call(fn, bound_s, what)`` runs the transactional calls that librdkafka may never return from
        (``bounded_call``; a deterministic simulation passes one that calls ``fn`` directly), bounded by the
        calls' own timeout."""
        super().__init__(*args, **kwargs)
        self._call_bounded = call
        self._call_bound_s = self._timeout_s
        self._producer_factory = producer_factory
        self._clock = clock
        self._recreated_at: list[float] = []
        self._in_transaction = False
        self.abandoned = 0
        self._stuck: list[threading.Thread] = []  # the given-up calls' threads (alive: still inside their clients)

    def init(self) -> None:
        """Fences an earlier producer with the same transactional id and aborts its open transaction.
        Retried while the coordinator is busy or away (a broker restart), for at most ``INIT_TIMEOUT_S``."""
        deadline = self._clock() + self.INIT_TIMEOUT_S
        while True:
            try:
                self.producer.init_transactions(self._timeout_s)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if not err.retriable() or self._clock() > deadline:
                    raise
                log.warning("init_transactions failed (%s); retrying", err)

    def recreate_producer(self, count: bool = True, abandon: bool = False) -> Producer:
        """After ProducerFenced: drop the fenced producer (its transaction is aborted by the broker) and
        start a new one with the same transactional id. ``count``: the failure counts toward the limit
        (a refusal of a stale group member's offsets does not: it ends when the member has rejoined).
        ``abandon``: a thread is still inside the old producer (``_abandon``): it is left alone, not purged."""
        now = self._clock()
        self._recreated_at = [t for t in self._recreated_at if now - t < self.RECREATE_WINDOW_S] + ([now] if count else [])
        if len(self._recreated_at) > self.RECREATE_MAX:
            raise RuntimeError(f"the transactional producer failed fatally {len(self._recreated_at)} times within "
                               f"{self.RECREATE_WINDOW_S:g}s; see the log for its errors")
        old, self.producer = self.producer, None
        if not abandon:
            try:
                old.purge()
            except Exception:
                pass
        del old  # the committer's reference: with it gone the fenced client ends (a destructor) unless a frame holds it
        self._in_transaction = False
        self._tracker.take_errors()
        self.producer = self._producer_factory()
        self.init()
        log.warning("exactly-once: a new transactional producer took over (uncommitted work is redone)")
        return self.producer

    def begin(self) -> None:
        if not self._in_transaction:
            self.producer.begin_transaction()
            self._in_transaction = True

    def abort(self) -> None:
        if self._in_transaction:
            producer = self.producer
            try:
                self._call(lambda: producer.abort_transaction(self._timeout_s), "abort_transaction")
            except TransactionalProducerStuck as exc:  # the new producer's init_transactions aborts it
                self._abandon(exc)
            except KafkaException as exc:
                if is_fenced(exc):
                    raise ProducerFenced(str(exc.args[0])) from exc
                raise
            finally:
                self._in_transaction = False
                self._tracker.take_errors()

    def commit(self, tasks: list[Task]) -> list[Task]:
        if not self._in_transaction:
            return []
        pending = self.pending(tasks)
        with_input = [t for t in tasks if t.needs_commit()]
        committing = False
        try:
            self.send_changelogs(tasks, pending)  # 1
            self.flush()  # 2
            offsets = self.input_offsets(tasks)
            if offsets:  # 3
                metadata = self._consumer.consumer_group_metadata()
                producer = self.producer
                self._call(lambda: producer.send_offsets_to_transaction(offsets, metadata, self._timeout_s),
                           "send_offsets_to_transaction")
            committing = True
            self._commit_transaction()  # 4
        except TransactionalProducerStuck as exc:
            # Step 3 or 4 never returned. The new producer's init_transactions settles the transaction: it
            # aborts it, or completes a commit whose request reached the coordinator. Step 3's case could go
            # the abort's way (commit_transaction was never called), but the tasks restore from their
            # changelogs either way: the overlay is not trusted after a call whose client was given up, and
            # the changelog tail past the stored offsets is only this transaction's (aborted) records.
            self._abandon(exc)
            raise TransactionOutcomeUnknown(str(exc)) from exc
        except KafkaException as exc:
            err = exc.args[0]
            if committing:
                self._outcome_unknown(err, is_fenced(exc))
                raise TransactionOutcomeUnknown(str(err)) from exc
            if is_fenced(exc):
                raise ProducerFenced(str(err)) from exc
            stale_member = err.code() in _STALE_MEMBER
            log.warning("transaction failed (%s); aborting it: uncommitted work is dropped and the input is "
                        "processed again from the last commit%s", err,
                        "; the group member rejoins" if stale_member else "")
            if stale_member and hasattr(self._consumer, "request_rejoin"):
                self._consumer.request_rejoin()
            # Not abort_transaction: after some abortable errors librdkafka must bump the producer epoch, and
            # when the coordinator answers CONCURRENT_TRANSACTIONS (seen after a broker restart) its next
            # transactional call blocks past any timeout. A new producer's init_transactions aborts the
            # transaction on the coordinator just as well, and its retries are bounded.
            self.recreate_producer(count=not stale_member)
            raise TransactionAborted(str(err)) from exc
        self._in_transaction = False
        self.mark_committed(tasks)
        self.write_stores(tasks, pending)  # 5
        self._metrics.commits_total += 1
        return with_input

    def _call(self, fn: Callable[[], Any], what: str) -> Any:
        return self._call_bounded(fn, self._call_bound_s, what)

    def _abandon(self, exc: TransactionalProducerStuck) -> None:
        """A transactional call never returned (``bounded_call``). The stuck client is left to its thread (it
        cannot be destroyed while a call is inside it) and a new producer with the same transactional id takes
        over: its ``init_transactions`` bumps the epoch, so the coordinator settles the open transaction (aborts
        it, or completes a commit already prepared) and refuses whatever the stuck client sends later. Each
        abandoned client keeps its threads and connections until its call returns (calls delayed by a broker restart
        were seen to return after up to a minute; then the client ends), so while ``ABANDON_MAX`` given-up calls are
        still inside their clients the app stops with the error instead of leaking another."""
        self.abandoned += 1
        self._metrics.transactional_producers_abandoned_total += 1
        self._stuck = [t for t in self._stuck if t.is_alive()]
        if len(self._stuck) >= self.ABANDON_MAX:
            raise TransactionalProducerStuck(
                f"{exc}. {len(self._stuck)} calls given up earlier are still inside their producers, each of which "
                "stays alive with its call: the app stops; restart it (its open transaction is aborted and the "
                "work since the last commit is redone, as after a crash)") from exc
        if exc.thread is not None:
            self._stuck.append(exc.thread)
        log.warning("%s: that producer is given up (%d given-up calls still inside their producers, at most %d); a "
                    "new one fences it and settles its transaction, and the tasks restore their stores from the "
                    "changelogs", exc, len(self._stuck), self.ABANDON_MAX)
        self.recreate_producer(count=False, abandon=True)

    def _outcome_unknown(self, err: KafkaError, fatal: bool) -> None:
        """Step 4 failed: the coordinator may have written PrepareCommit. A new producer's init_transactions
        completes that commit, or aborts the transaction; either way it is settled when this returns."""
        log.warning("committing the transaction failed (%s): it may have committed or not. A new producer "
                    "settles it; the tasks restore their stores from the changelogs and rewind their inputs "
                    "to the committed offsets", err)
        self.recreate_producer(count=fatal)

    def _commit_transaction(self) -> None:
        for attempt in range(3):
            try:
                producer = self.producer
                self._call(lambda: producer.commit_transaction(self._timeout_s), "commit_transaction")
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.retriable() and not err.txn_requires_abort() and attempt < 2:
                    continue  # the outcome is unknown: committing again is safe and tells it
                raise
