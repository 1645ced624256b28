"""Membership: how this instance learns which tasks it runs (active) and which it keeps warm (standby,
warm-up), over Kafka's own group coordinator.

The group member is a kafka-python consumer that never fetches: it joins the group ``app_id`` with
hotstate's assignor (``TaskAssignor``, classic protocol, cooperative rebalancing) and carries user data
both ways, as Kafka Streams' StreamsPartitionAssignor does. librdkafka has no pluggable assignor, so the
data paths stay on confluent-kafka: the main consumer is assigned by hand what the member owns, commits
go through the member (fenced by its generation), and under exactly-once the transactional producer gets
the member's group metadata (``kafka/group_metadata.py``). docs/spikes/membership.md has the spike.

Subscription user data (member -> leader), JSON: ``{"v": 1, "offsets": {task: offset}, "standby": [...],
"nonce": n}``: per task, the changelog offset the member's local state holds (summed over the task's
stores; active, standby, or state left on disk). Assignment user data (leader -> member):
``{"v": 1, "standby": [...], "warmup": [...], "probe": bool}``. Active tasks travel as the member's
assigned partitions.

Threads: kafka-python runs the group protocol on its own IO thread (an event loop that also sends the
heartbeats), and calls the assignor and the rebalance listener there, while the processing thread waits
inside ``GroupMembership.poll``. Anything slow there stops the heartbeats, and past session_timeout_ms the
member is evicted mid-rebalance: so the rebalance callbacks only record which partitions were assigned,
revoked or lost, and ``poll`` calls the ``MembershipListener`` on the processing thread right after the
member's poll returns, before this member joins again (so a revoked task is committed and closed before
its next owner starts). The leader's assignor reads every changelog's end offset in one batched request.
"""
from __future__ import annotations

import collections
import json
import logging
import threading
import time
from typing import Any, Callable, Mapping, Protocol

from confluent_kafka import OFFSET_BEGINNING, OFFSET_INVALID, KafkaError, KafkaException
from confluent_kafka import TopicPartition as KTopicPartition
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata
from kafka import errors as kafka_errors
from kafka import TopicPartition as KpTopicPartition
from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor, RebalanceProtocol
from kafka.protocol.consumer.metadata import ConsumerProtocolAssignment, ConsumerProtocolSubscription

from .. import kafka_settings
from ..config import Config
from ..dsl.topology import Topology
from ..kafka import clients, group_metadata
from ..records import TopicPartition
from . import assignor
from .task import task_id

log = logging.getLogger(__name__)
# kafka-python logs every connection at INFO; unless the application set a level for it, keep its warnings.
if logging.getLogger("kafka").level == logging.NOTSET:
    logging.getLogger("kafka").setLevel(logging.WARNING)

_JOIN_WAIT_MS = 500  # one wait inside a join; the loop re-waits until joined or stopped
_POLL_EVERY_S = 0.05  # the group member's poll when no rebalance is pending (heartbeats run on their own)
_WARMUP_CHECK_EVERY_S = 1.0
# After a probe for a set of warm-ups the leader did not move (it judges by fresh end offsets, the member by
# its cached high watermark: they can disagree), the next probe for the same set waits this long, doubling up
# to probing_rebalance_interval_ms (without it: a rebalance a second while they disagree).
PROBE_BACKOFF_MIN_S = 10.0


class MembershipListener(Protocol):
    """Called by ``GroupMembership.poll`` on the processing thread (see the module docstring for the threads)."""

    def partitions_assigned(self, partitions: list[TopicPartition]) -> None: ...

    def partitions_revoked(self, partitions: list[TopicPartition]) -> None:
        """Still owned while this runs: commit, then close."""
        ...

    def partitions_lost(self, partitions: list[TopicPartition]) -> None:
        """Already owned by someone else: close without committing."""
        ...

    def standbys_assigned(self, standby: set[str], warmup: set[str]) -> None:
        """After each rebalance: the standby and warm-up tasks this instance keeps from now on."""
        ...

    def task_offsets(self) -> dict[str, int]:
        """Per task, the changelog offset local state holds (summed over its stores)."""
        ...

    def standby_lags(self) -> dict[str, int]:
        """Per standby or warm-up task, how far its local state is behind the changelog end."""
        ...

    def before_rejoin(self) -> None:
        """A rebalance is about to start: commit now, so a revoked task has nothing left to commit."""
        ...


def _tp(topic: str, partition: int) -> TopicPartition:
    return TopicPartition(topic, partition)


_KP_STALE = ((kafka_errors.IllegalGenerationError, KafkaError.ILLEGAL_GENERATION),
             (kafka_errors.UnknownMemberIdError, KafkaError.UNKNOWN_MEMBER_ID),
             (kafka_errors.RebalanceInProgressError, KafkaError.REBALANCE_IN_PROGRESS),
             (kafka_errors.FencedInstanceIdError, KafkaError.FENCED_INSTANCE_ID))


def _commit_error_code(exc: BaseException) -> int:
    """kafka-python's commit error as librdkafka's code: a refusal of a stale member keeps its meaning (the
    committer then closes the tasks as lost, commit.py); anything else is _FAIL (transient)."""
    failed = isinstance(exc, kafka_errors.CommitFailedError)
    for e in (exc, *(exc.args[:1] if failed else ())):
        for cls, code in _KP_STALE:
            if isinstance(e, cls):
                return code
    # A CommitFailedError without a known cause: kafka-python knows it is not part of an active group.
    return KafkaError.ILLEGAL_GENERATION if failed else KafkaError._FAIL


class TaskAssignor(AbstractPartitionAssignor):
    """kafka-python's hook for hotstate's assignor. ``assign`` runs on the group leader."""

    name = "hotstate"
    version = 1

    def __init__(self, membership: "GroupMembership"):
        self._m = membership
        self.owned: list[KpTopicPartition] = []

    def supported_protocols(self) -> list:
        return [RebalanceProtocol.COOPERATIVE]

    def metadata(self, topics: Any) -> ConsumerProtocolSubscription:
        m = self._m
        user_data = json.dumps({"v": USER_DATA_VERSION, "offsets": m.listener.task_offsets(),
                                "standby": sorted(m.standby | m.warmup), "nonce": m.nonce}).encode()
        by_topic: dict[str, list[int]] = {}
        for tp in self.owned:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        owned = [ConsumerProtocolSubscription.TopicPartition(topic=t, partitions=sorted(ps))
                 for t, ps in sorted(by_topic.items())]
        return ConsumerProtocolSubscription(version=1, topics=sorted(topics), user_data=user_data,
                                            owned_partitions=owned)

    def assign(self, cluster: Any, members: list) -> dict:
        m = self._m
        tasks = task_partitions(m.topology, cluster.partitions_for_topic)
        ends = m.task_end_offsets(tasks)
        infos, owner_now = [], {}
        for member in members:
            sub = member.metadata
            data = _read_user_data(sub.user_data, f"member {member.member_id}'s subscription")
            owned = set()
            for otp in getattr(sub, "owned_partitions", None) or ():
                for p in otp.partitions:
                    owned.add((otp.topic, p))
            active = frozenset(t for t, tps in tasks.items() if any(tuple(tp) in owned for tp in tps))
            for t in active:
                owner_now.setdefault(t, set()).add(member.member_id)
            infos.append(assignor.MemberInfo(member.member_id, {k: int(v) for k, v in data.get("offsets", {}).items()},
                                             active, frozenset(data.get("standby", ()))))
        # A task two members claim (one was a zombie): neither counts as its previous owner.
        infos = [assignor.MemberInfo(i.member_id, i.task_offsets,
                                     frozenset(t for t in i.previous_active if len(owner_now[t]) == 1),
                                     i.previous_standby) for i in infos]
        result = assignor.assign(infos, ends, m.assignor_config)
        probe = assignor.needs_probing(result)
        # Cooperative (KIP-429): a task another member still owns is withheld this round; that member revokes
        # it, and the follow-up rebalance hands it over. (A task its assignee claims along with a zombie stays
        # with the assignee; the zombie's assignment drops it.) Meanwhile the assignee keeps the task's
        # state warm as a standby, and every member rejoins at once rather than at its next heartbeat.
        withheld = {mid: {t for t in a.active if owner_now.get(t) and mid not in owner_now[t]}
                    for mid, a in result.items()}
        rejoin = any(withheld.values())
        out = {}
        for mid, a in result.items():
            parts: dict[str, list[int]] = {}
            for t in a.active - withheld[mid]:
                for tp in tasks[t]:  # all of a task's partitions go to one member
                    parts.setdefault(tp.topic, []).append(tp.partition)
            user_data = json.dumps({"v": USER_DATA_VERSION, "standby": sorted(a.standby | withheld[mid]), "warmup": sorted(a.warmup),
                                    "probe": probe, "rejoin": rejoin}).encode()
            out[mid] = ConsumerProtocolAssignment(
                version=0, user_data=user_data,
                assigned_partitions=[ConsumerProtocolAssignment.TopicPartition(topic=t, partitions=sorted(ps))
                                     for t, ps in sorted(parts.items())])
        log.info("assignment (leader): %s", {mid: (sorted(a.active), sorted(a.standby), sorted(a.warmup))
                                             for mid, a in result.items()})
        return out

    def on_assignment(self, assignment: Any, generation: int) -> None:
        before, self.owned = self.owned, list(assignment.partitions())
        self._m.check_membership(before, self.owned)
        data = _read_user_data(assignment.user_data, "the assignment from the group leader")
        self._m.assignment_received(set(data.get("standby", ())), set(data.get("warmup", ())),
                                    bool(data.get("probe")), bool(data.get("rejoin")))


USER_DATA_VERSION = 1  # docs/formats.md, "Group member user data"


def task_partitions(topology: Topology, partitions_for_topic: Callable[[str], Any]) -> dict[str, list[TopicPartition]]:
    """Task id -> its partition group: partition p of every source topic of its sub-topology (Kafka Streams'
    partition grouper). Partitions come from the cluster metadata; a partition only some of a sub-topology's
    topics have (not co-partitioned: the app refuses that at start) still makes a task, of the topics that have it."""
    tasks: dict[str, list[TopicPartition]] = {}
    for sub in topology.subtopologies:
        for topic in sub.source_topics:
            for p in sorted(partitions_for_topic(topic) or ()):
                tasks.setdefault(task_id(sub.id, p), []).append(_tp(topic, p))
    return dict(sorted(tasks.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("_"))))


def _read_user_data(raw: bytes | None, what: str) -> dict:
    """The JSON user data of a subscription or an assignment, or {} (a member with no state, an assignment
    with no standbys) when it is absent, unreadable, or of another version than this instance writes: a
    rolling upgrade or downgrade then degrades to placing tasks without lags, never to a failed rebalance."""
    if not raw:
        return {}
    try:
        data = json.loads(raw.decode())
    except ValueError:
        log.warning("%s carries user data hotstate cannot read; treating it as empty", what)
        return {}
    version = data.get("v") if isinstance(data, dict) else None
    if version != USER_DATA_VERSION:
        log.warning("%s carries user data of version %r where this instance reads version %d (instances of "
                    "different hotstate versions in one group?); treating it as empty", what, version,
                    USER_DATA_VERSION)
        return {}
    return data


class _RebalanceListener(ConsumerRebalanceListener):
    """kafka-python wraps an exception of a rebalance callback in a KafkaError that names none of it; the
    original is kept, and ``GroupMembership.poll`` raises it instead (e.g. a store that cannot be opened)."""

    def __init__(self, membership: "GroupMembership"):
        self._m = membership

    def _call(self, fn: Callable[[Any], None], partitions: Any) -> None:
        try:
            fn(partitions)
        except BaseException as exc:
            self._m.callback_error = exc
            raise

    def on_partitions_assigned(self, assigned: Any) -> None:
        self._call(self._m.on_assigned, assigned)

    def on_partitions_revoked(self, revoked: Any) -> None:
        self._call(self._m.on_revoked, revoked)

    def on_partitions_lost(self, lost: Any) -> None:
        self._call(self._m.on_lost, lost)


def _kafka_member(config: Config, plugin: TaskAssignor) -> KafkaConsumer:
    """The kafka-python consumer that is the group member; it never fetches."""
    return KafkaConsumer(
        bootstrap_servers=config.bootstrap_servers.split(","),
        group_id=config.group_id,
        client_id=f"{config.app_id}-member",
        group_instance_id=config.group_instance_id,
        partition_assignment_strategy=[plugin],
        enable_auto_commit=False,
        # It never fetches; this makes its offset reads ask for stable offsets (KIP-447: none pending in a
        # transaction), as librdkafka's read_committed consumer does.
        isolation_level="read_committed",
        session_timeout_ms=config.session_timeout_ms,
        # Heartbeats also tell a member that a rebalance started: once a second, it joins promptly.
        heartbeat_interval_ms=max(100, min(1000, config.session_timeout_ms // 3)),
        max_poll_interval_ms=config.max_poll_interval_ms,
        request_timeout_ms=max(config.session_timeout_ms + 5000, 30000),
        # kafka-python's default (30 s) left the member reconnecting to a restarted broker for up to ~12 s.
        reconnect_backoff_max_ms=clients.RECONNECT_BACKOFF_MAX_MS,
        # kafka_config's security settings in kafka-python's names (checked when the Config was made).
        **kafka_settings.to_kafka_python(config.kafka_config),
    )


class GroupMembership:
    def __init__(self, config: Config, topology: Topology, consumer: Any,
                 end_offsets: Callable[[list[TopicPartition]], dict[TopicPartition, int]],
                 member_factory: Callable[[Config, TaskAssignor], Any] | None = None):
        """``consumer``: the confluent-kafka main consumer, assigned by hand what this member owns.
        ``end_offsets``: changelog end offsets (the leader's assignor asks for them)."""
        self.config = config
        self.topology = topology
        self._consumer = consumer
        self._end_offsets = end_offsets
        self.assignor_config = assignor.AssignorConfig(config.num_standby_replicas, config.acceptable_recovery_lag,
                                                       config.max_warmup_replicas)
        self.listener: MembershipListener | None = None
        self.standby: set[str] = set()
        self.warmup: set[str] = set()
        self.nonce = 0
        self._assignor = TaskAssignor(self)
        self._new_assignment = False
        self._probe = False
        self._probe_at = float("inf")
        self._probe_requested = False
        self._probe_not_before = 0.0  # see PROBE_BACKOFF_MIN_S
        self._probe_backoff_s = PROBE_BACKOFF_MIN_S
        self._next_poll = 0.0
        self._next_warmup_check = 0.0
        self._deferred_commits: dict[tuple[str, int], int] = {}
        self._assigned: set[TopicPartition] = set()  # what the main consumer is assigned
        self._member_id: str | None = None  # of the last assignment
        self._thread: threading.Thread | None = None
        self._events: collections.deque[tuple[str, list[TopicPartition]]] = collections.deque()  # see on_assigned
        self.callback_error: BaseException | None = None  # raised by a rebalance callback (see _RebalanceListener)
        self._member = (member_factory or _kafka_member)(config, self._assignor)
        self._coordinator = self._member._coordinator

    # ---- processing thread ----
    def join(self, listener: MembershipListener) -> None:
        self.listener = listener
        self._thread = threading.current_thread()
        self._member.subscribe(sorted(self.topology.source_topics), listener=_RebalanceListener(self))
        self._await_source_metadata()

    def _await_source_metadata(self) -> None:
        """Before the first join: the member's metadata of its source topics, waited for at most
        broker_timeout_ms. Joined without it (kafka-python waits so only for pattern subscriptions), a leader's
        assignor saw no partitions: the first generation assigned nothing and a second rebalance followed at
        once (bench/restore.py --timeline). On failure the member joins as before."""
        coordinator = self._coordinator
        try:
            update = coordinator._cluster.request_update()
            coordinator._net.run(coordinator._manager.wait_for, update, self.config.broker_timeout_ms)
        except Exception as exc:  # kafka-python's timeout or errors; its internals moved (a new version)
            log.info("the group member's metadata of the source topics is not there (%r); it joins without", exc)

    def need_rejoin(self) -> bool:
        return bool(self._coordinator.need_rejoin())

    def poll(self, stopping: Callable[[], bool] = lambda: False) -> None:
        """Drives the group protocol; what the rebalance callbacks recorded is done here, after the member's
        poll returns (see ``on_assigned``). Blocks while a rebalance is under way:
        once a join is in flight it is waited for back to back, because kafka-python drops (and sends
        again) a join that completes while nobody waits for it, which restarts the rebalance."""
        now = time.monotonic()
        if self._new_assignment is False and self.warmup and now >= self._next_warmup_check:
            self._next_warmup_check = now + _WARMUP_CHECK_EVERY_S
            self._maybe_probe(now)
        joining = self._joining()
        if not joining and now < self._next_poll:
            return
        self._next_poll = now + _POLL_EVERY_S
        if joining:
            self.listener.before_rejoin()
            self._flush_deferred_commits()
        while True:
            try:
                self._coordinator.poll(timeout_ms=_JOIN_WAIT_MS if joining else 0)
            except Exception:
                error, self.callback_error = self.callback_error, None
                if error is not None:
                    raise error from None
                raise
            # The callbacks' work, and commits asked for inside them, are done before this member joins again
            # (a cooperative revocation is followed by a second join at once).
            self._apply_events()
            self._flush_deferred_commits()
            joining = self._joining()
            if not joining or stopping():
                break
        if self._new_assignment:
            self._new_assignment = False
            self.listener.standbys_assigned(set(self.standby), set(self.warmup))

    def _joining(self) -> bool:
        return bool(self._coordinator.need_rejoin()) or getattr(self._coordinator, "_join_task", None) is not None

    def _maybe_probe(self, now: float) -> None:
        """Warm-ups exist: ask for a rebalance once they caught up (or after probing_rebalance_interval_ms),
        so the leader can hand their tasks over."""
        if self._probe_requested or now < self._probe_not_before:
            return
        lags = self.listener.standby_lags()
        caught_up = [t for t in self.warmup if t in lags and lags[t] <= self.config.acceptable_recovery_lag]
        if caught_up or now >= self._probe_at:
            log.info("probing rebalance: warm-ups %s caught up (lags %s)", sorted(caught_up),
                     {t: lags.get(t) for t in sorted(self.warmup)})
            self._probe_requested = True
            self._probe_not_before = now + self._probe_backoff_s
            self._probe_backoff_s = min(self._probe_backoff_s * 2, self.config.probing_rebalance_interval_ms / 1000)
            self.request_rejoin()

    def request_rejoin(self) -> None:
        """Ask for a rebalance with fresh user data (a static member's rejoin alone would not trigger one)."""
        self.nonce += 1
        self._coordinator.request_rejoin()

    def commit(self, offsets: list[KTopicPartition], asynchronous: bool = False) -> None:
        """Commits input offsets as this member (the broker fences a stale generation). Inside a rebalance
        callback the commit is sent right after the callback returns, before this member rejoins."""
        if threading.current_thread() is not self._thread:
            for tp in offsets:
                self._deferred_commits[(tp.topic, tp.partition)] = tp.offset
            return
        self._commit({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def _flush_deferred_commits(self) -> None:
        if self._deferred_commits:
            offsets, self._deferred_commits = self._deferred_commits, {}
            try:
                self._commit(offsets)
            except KafkaException as exc:
                log.warning("committing the offsets of revoked tasks failed (%s); their new owner processes "
                            "the records since the last commit again", exc.args[0])

    def _commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self._require_generation()
        try:
            self._member.commit({KpTopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
        except Exception as exc:  # kafka-python's errors, e.g. CommitFailedError after a rebalance
            raise KafkaException(KafkaError(_commit_error_code(exc), f"offset commit failed: {exc!r}")) from exc

    def committed(self, tps: list[KTopicPartition], timeout: float) -> list[KTopicPartition]:
        """The group's committed offsets (stable ones: none pending in an open transaction), read as this member,
        in the shape of librdkafka's ``Consumer.committed`` (offset -1001 where none is committed). Not read
        through the librdkafka consumer: after a broker restart its group-coordinator requests were seen to
        time out for minutes (librdkafka issue 5511); kafka-python's coordinator lookup recovers."""
        if not tps:
            return []
        try:
            found = self._coordinator.fetch_committed_offsets([KpTopicPartition(tp.topic, tp.partition) for tp in tps],
                                                              timeout_ms=int(timeout * 1000))
        except Exception as exc:  # kafka-python's errors (KafkaTimeoutError, coordinator errors)
            code = KafkaError._TIMED_OUT if isinstance(exc, kafka_errors.KafkaTimeoutError) else KafkaError._FAIL
            raise KafkaException(KafkaError(code, f"reading committed offsets failed: {exc!r}")) from exc
        out = []
        for tp in tps:
            meta = found.get(KpTopicPartition(tp.topic, tp.partition))
            out.append(KTopicPartition(tp.topic, tp.partition,
                                       meta.offset if meta is not None and meta.offset >= 0 else OFFSET_INVALID))
        return out

    def generation(self) -> int:
        """The group generation this member is in right now (-1 when it has none). Read on the processing
        thread while it applies an assignment, it is the generation of that assignment (snapshots' fencing
        epoch, runtime/snapshots.py)."""
        return int(self._member.group_metadata().generation_id)

    def has_generation(self) -> bool:
        """False when this member knows its offsets would be refused (it is out of the group or rejoining)."""
        gm = self._member.group_metadata()
        return gm.generation_id >= 0 and bool(gm.member_id)

    def drop_out(self) -> None:
        """The group refused this member's offsets as stale (at-least-once): every task closes now as lost, and
        kafka-python is made to see its generation as lost (member id kept), so it rejoins and reports each
        partition it then gets as newly assigned (a task that comes back starts from its committed state)."""
        self._coordinator.reset_generation(member_id=self._member.group_metadata().member_id)
        self.on_lost(list(self._assigned))

    def consumer_group_metadata(self) -> bytes:
        gm = self._require_generation()
        return group_metadata.serialized(gm.group_id, gm.generation_id, gm.member_id, gm.group_instance_id)

    def _require_generation(self) -> Any:
        """The member's generation, refusing none: the broker accepts offsets sent without a generation
        (generation -1, no member id) unfenced, so a zombie whose membership was reset must not send any."""
        gm = self._member.group_metadata()
        if gm.generation_id < 0 or not gm.member_id:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_MEMBER_ID,
                                            "this instance is not a member of the group right now (it is rejoining); "
                                            "its offsets are not committed"))
        return gm

    def close(self) -> None:
        """Leaves the group (a static member does not: it keeps its tasks for session_timeout_ms)."""
        try:
            self._member.close(autocommit=False)
        except Exception:
            log.exception("closing the group member failed")

    # ---- kafka-python's IO thread, while the processing thread waits in poll() ----
    def task_end_offsets(self, tasks: Mapping[str, list[TopicPartition]]) -> dict[str, int]:
        changelogs = {t: [_tp(spec.changelog_topic(self.config.app_id), tps[0].partition)
                          for spec in self.topology.subtopology_of(tps[0].topic).stores.values()]
                      for t, tps in tasks.items()}
        ends = self._end_offsets([c for cs in changelogs.values() for c in cs])
        return {t: sum(ends.get(c, 0) for c in cs) for t, cs in changelogs.items()}

    def check_membership(self, owned_before: list, owned_now: list) -> None:
        """Called first when an assignment arrives. A new member id means the group evicted this member
        (e.g. it was frozen past the session timeout) and it joined again as a new member: what it owned
        before is lost, even partitions it gets again (kafka-python reports lost partitions only when it
        noticed the eviction before rejoining). Those tasks close without committing and start afresh from
        their committed state; the stale in-memory work of the old membership is dropped."""
        member_id = self._member.group_metadata().member_id
        previous, self._member_id = self._member_id, member_id
        if previous is None or previous == member_id or not owned_before:
            return
        lost = sorted(_tp(tp.topic, tp.partition) for tp in owned_before)
        log.warning("this instance rejoined the group as a new member (%s -> %s): its tasks %s are lost and "
                    "start again from their committed state", previous, member_id, [str(p) for p in lost])
        self.on_lost(owned_before)
        self._assignor.owned = list(owned_now)
        before = {(p.topic, p.partition) for p in owned_before}
        kept = [tp for tp in owned_now if (tp.topic, tp.partition) in before]
        if kept:
            self.on_assigned(kept)  # kafka-python sees no change for these, so it will not report them

    def assignment_received(self, standby: set[str], warmup: set[str], probe: bool, rejoin: bool = False) -> None:
        if rejoin:  # the leader withheld tasks until their owners revoke them: the follow-up round starts now
            self._coordinator.request_rejoin()
        if warmup != self.warmup:  # a new set of warm-ups (a probe moved a task): probe for it at once
            self._probe_not_before, self._probe_backoff_s = 0.0, PROBE_BACKOFF_MIN_S
        self.standby, self.warmup = standby, warmup
        self._new_assignment = True
        self._probe_requested = False
        self._probe_at = time.monotonic() + self.config.probing_rebalance_interval_ms / 1000 if probe else float("inf")

    # ---- the rebalance callbacks (kafka-python's event loop, which also sends the heartbeats) ----
    # They only record what changed: the work (opening stores, committing, closing tasks) can take longer than
    # session_timeout_ms, and done here it would stop the heartbeats and get this member evicted
    # mid-rebalance. ``poll`` does it on the processing thread right after the member's poll returns, so
    # before this member joins again (a revoked task is committed before its next owner can start).
    def on_assigned(self, assigned: Any) -> None:
        self._record("assigned", assigned)

    def on_revoked(self, revoked: Any) -> None:
        self._record("revoked", revoked)

    def on_lost(self, lost: Any) -> None:
        self._assignor.owned = []
        self._deferred_commits.clear()
        self._record("lost", lost)

    def _record(self, kind: str, tps: Any) -> None:
        self._events.append((kind, sorted(_tp(tp.topic, tp.partition) for tp in tps)))
        if threading.current_thread() is self._thread:
            self._apply_events()  # called by the processing thread itself (drop_out)

    # ---- processing thread: the work of the callbacks ----
    def _apply_events(self) -> None:
        while self._events:
            kind, parts = self._events.popleft()
            if kind == "assigned":
                self._apply_assigned(parts)
            elif kind == "revoked":
                self._apply_revoked(parts)
            else:
                self._apply_lost(parts)

    def _apply_assigned(self, assigned: list[TopicPartition]) -> None:
        parts = [tp for tp in assigned if tp not in self._assigned]
        self._assigned.update(parts)
        self._consumer.incremental_assign(self._start_offsets(parts))
        if parts:
            self._consumer.pause([KTopicPartition(t, p) for t, p in parts])
        self.listener.partitions_assigned(parts)

    def _start_offsets(self, parts: list[TopicPartition]) -> list[KTopicPartition]:
        """Where the main consumer starts on newly assigned partitions: the committed offset, else the
        beginning (``auto.offset.reset=earliest``). Read as this member (see ``committed``); if that fails the
        consumer is left to read them itself."""
        tps = [KTopicPartition(t, p) for t, p in parts]
        try:
            committed = self.committed(tps, self.config.broker_timeout_ms / 1000)
        except KafkaException as exc:
            log.warning("reading the committed offsets of %d assigned partitions failed (%s); the consumer "
                        "reads them itself", len(tps), exc.args[0])
            return tps
        return [KTopicPartition(tp.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                for tp in committed]

    def _apply_revoked(self, revoked: list[TopicPartition]) -> None:
        parts = [tp for tp in revoked if tp in self._assigned]
        self.listener.partitions_revoked(parts)
        self._unassign(parts)

    def _apply_lost(self, lost: list[TopicPartition]) -> None:
        parts = [tp for tp in lost if tp in self._assigned]
        if lost and not parts:
            return  # closed as lost already (drop_out): kafka-python reports them as it rejoins
        self.listener.partitions_lost(parts)
        self._unassign(parts)

    def _unassign(self, parts: list[TopicPartition]) -> None:
        self._assigned.difference_update(parts)
        self._consumer.incremental_unassign([KTopicPartition(t, p) for t, p in parts])
