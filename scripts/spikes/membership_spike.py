#!/usr/bin/env python3
"""Spike: can a Python client carry a custom, lag-aware task assignor with
per-member user data over Kafka's classic group protocol?

Runs against a real broker (default 127.0.0.1:19092, override with
HOTSTATE_BOOTSTRAP or --bootstrap).  Phases (all by default, or pick with
--only a,b,...):

  eager     3 kafka-python members, custom EAGER assignor; the leader must see
            every member's subscription user data, every member must receive
            the user data the leader put into its assignment.
  coop      same assignor in COOPERATIVE (KIP-429) mode: 2 members, then a 3rd
            joins; only the moving partitions may be revoked.
  static    static membership (group_instance_id): restart a member within the
            session timeout, with unchanged and then with changed user data.
  eos       kafka-python KafkaConsumer.group_metadata() +
            KafkaProducer.send_offsets_to_transaction(); read the committed
            offset back; a stale generation must be fenced.
  xclient   kafka-python member + confluent-kafka transactional producer: the
            group metadata blob is built from kafka-python's membership.
  aiokafka  aiokafka 0.14: custom assignor with user data both ways, and its
            send_offsets_to_transaction(offsets, group_id).

Each phase prints PASS/FAIL lines; exit status is non-zero if any check failed.
Topic and group names carry a per-run suffix, so reruns do not collide.
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import glob
import json
import logging
import math
import os
import struct
import sys
import threading
import time

from kafka import (ConsumerGroupMetadata, ConsumerRebalanceListener, KafkaAdminClient,
                   KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition)
from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor, RebalanceProtocol
from kafka.protocol.consumer.metadata import (ConsumerProtocolAssignment,
                                              ConsumerProtocolSubscription)

BOOTSTRAP = os.environ.get("HOTSTATE_BOOTSTRAP", "127.0.0.1:19092")
RUN = time.strftime("%H%M%S") + "-" + str(os.getpid())
RESULTS: list[tuple[str, bool, str]] = []
PRINT_LOCK = threading.Lock()


def say(*parts):
    with PRINT_LOCK:
        print(*parts, flush=True)


def check(phase, what, ok, detail=""):
    RESULTS.append((phase, bool(ok), what))
    say(f"  [{'PASS' if ok else 'FAIL'}] {phase}: {what}" + (f" -- {detail}" if detail else ""))
    return ok


def observe(phase, what, yes, detail=""):
    """An observation about behaviour, not a pass/fail requirement."""
    say(f"  [OBSERVED {'YES' if yes else 'NO'}] {phase}: {what}" + (f" -- {detail}" if detail else ""))
    return yes


def wait_until(pred, timeout_s, step_s=0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return bool(pred())


# --------------------------------------------------------------------------
# The pure assignment function (what hotstate would own and unit-test).
# tasks: task ids; members: {member_id: {"member": name, "task_offsets": {task: offset}}}
# Returns {member_id: {"active": [...], "standby": [...]}}.  Active goes to
# the most caught-up member with spare capacity; one standby goes to the most
# caught-up other member.
# --------------------------------------------------------------------------
def plan(tasks, members):
    ids = sorted(members)
    cap = math.ceil(len(tasks) / len(ids))
    out = {m: {"active": [], "standby": []} for m in ids}

    def ranked(task, exclude=None):
        return sorted((m for m in ids if m != exclude),
                      key=lambda m: (-members[m]["task_offsets"].get(task, -1), m))

    for t in tasks:
        for m in ranked(t):
            if len(out[m]["active"]) < cap:
                out[m]["active"].append(t)
                break
    for t in tasks:
        owner = next(m for m in ids if t in out[m]["active"])
        others = ranked(t, exclude=owner)
        if others:
            out[others[0]]["standby"].append(t)
    return out


def task_of(tp):
    return f"p{tp.partition}"


# --------------------------------------------------------------------------
# kafka-python assignor
# --------------------------------------------------------------------------
class LagAwareSpikeAssignor(AbstractPartitionAssignor):
    """Subscription user data: {"member", "task_offsets"}.
    Assignment user data: {"for", "standby", "leader_saw", "generation_hint"}."""

    name = "hotstate-spike"

    def __init__(self, member_name, task_offsets, protocol=RebalanceProtocol.EAGER):
        self.member_name = member_name
        self.task_offsets = dict(task_offsets)
        self.protocol = protocol
        self.owned: list[TopicPartition] = []   # we must track this ourselves (see notes)
        self.assign_calls: list[dict] = []       # leader side
        self.received: list[dict] = []           # member side
        self.nonce = 0                           # bump to force changed metadata

    def supported_protocols(self):
        return [self.protocol]

    def metadata(self, topics):
        user_data = json.dumps({"member": self.member_name, "nonce": self.nonce,
                                "task_offsets": self.task_offsets}).encode()
        if self.protocol == RebalanceProtocol.COOPERATIVE:
            by_topic: dict[str, list[int]] = {}
            for tp in self.owned:
                by_topic.setdefault(tp.topic, []).append(tp.partition)
            owned = [ConsumerProtocolSubscription.TopicPartition(topic=t, partitions=sorted(ps))
                     for t, ps in sorted(by_topic.items())]
            return ConsumerProtocolSubscription(version=1, topics=sorted(topics),
                                                user_data=user_data, owned_partitions=owned)
        return ConsumerProtocolSubscription(version=0, topics=sorted(topics), user_data=user_data)

    def assign(self, cluster, members):
        seen = {}
        owner_now = {}
        topics = set()
        for m in members:
            sub = m.metadata  # already decoded ConsumerProtocolSubscription
            seen[m.member_id] = json.loads(sub.user_data.decode())
            seen[m.member_id]["group_instance_id"] = m.group_instance_id
            topics.update(sub.topics)
            for otp in (getattr(sub, "owned_partitions", None) or []):
                for p in otp.partitions:
                    owner_now[TopicPartition(otp.topic, p)] = m.member_id
        tps = [TopicPartition(t, p) for t in sorted(topics)
               for p in sorted(cluster.partitions_for_topic(t) or [])]
        by_task = {task_of(tp): tp for tp in tps}
        target = plan(sorted(by_task), seen)
        withheld = []
        result = {}
        for mid, tasks in target.items():
            parts: dict[str, list[int]] = {}
            for task in tasks["active"]:
                tp = by_task[task]
                if (self.protocol == RebalanceProtocol.COOPERATIVE
                        and owner_now.get(tp) not in (None, mid)):
                    withheld.append(task)   # KIP-429: wait until the owner revoked it
                    continue
                parts.setdefault(tp.topic, []).append(tp.partition)
            user_data = json.dumps({
                "for": seen[mid]["member"],
                "standby": tasks["standby"],
                "leader_saw": sorted(v["member"] for v in seen.values()),
                "leader": self.member_name,
            }).encode()
            result[mid] = ConsumerProtocolAssignment(
                version=0, user_data=user_data,
                assigned_partitions=[ConsumerProtocolAssignment.TopicPartition(topic=t, partitions=sorted(ps))
                                     for t, ps in sorted(parts.items())])
        self.assign_calls.append({
            "at": time.monotonic(),
            "seen": {v["member"]: v["task_offsets"] for v in seen.values()},
            "instance_ids": {v["member"]: v["group_instance_id"] for v in seen.values()},
            "target": {seen[mid]["member"]: t for mid, t in target.items()},
            "withheld": withheld,
        })
        return result

    def on_assignment(self, assignment, generation):
        self.owned = assignment.partitions()
        self.received.append({
            "generation": generation,
            "partitions": sorted(task_of(tp) for tp in self.owned),
            "user_data": json.loads(assignment.user_data.decode()) if assignment.user_data else None,
        })


class RecordingListener(ConsumerRebalanceListener):
    def __init__(self, member):
        self.member = member

    def on_partitions_revoked(self, revoked):
        self.member.events.append(("revoked", sorted(task_of(tp) for tp in revoked)))

    def on_partitions_assigned(self, assigned):
        self.member.events.append(("assigned", sorted(task_of(tp) for tp in assigned)))


class Member(threading.Thread):
    """One kafka-python group member, polling in its own thread."""

    def __init__(self, name, group, topic, task_offsets, protocol=RebalanceProtocol.EAGER,
                 instance_id=None, session_timeout_ms=10000):
        super().__init__(name=name, daemon=True)
        self.member_name = name
        self.events: list[tuple[str, list[str]]] = []
        self.assignor = LagAwareSpikeAssignor(name, task_offsets, protocol)
        self.stop_evt = threading.Event()
        self.error = None
        self.consumer = KafkaConsumer(
            bootstrap_servers=BOOTSTRAP, group_id=group, client_id=name,
            group_instance_id=instance_id, partition_assignment_strategy=[self.assignor],
            enable_auto_commit=False, auto_offset_reset="earliest",
            session_timeout_ms=session_timeout_ms, heartbeat_interval_ms=1000,
            max_poll_interval_ms=60000)
        self.consumer.subscribe([topic], listener=RecordingListener(self))

    def run(self):
        try:
            while not self.stop_evt.is_set():
                self.consumer.poll(timeout_ms=200)
        except Exception as exc:  # noqa: BLE001 - surfaced in the report
            self.error = exc
            say(f"  ! {self.member_name} poll loop died: {exc!r}")

    def shutdown(self):
        self.stop_evt.set()
        self.join(timeout=15)
        self.consumer.close()

    @property
    def last(self):
        return self.assignor.received[-1] if self.assignor.received else None

    def generation(self):
        return self.consumer.group_metadata().generation_id


def admin():
    return KafkaAdminClient(bootstrap_servers=BOOTSTRAP, client_id="spike-admin")


def make_topic(name, partitions=6):
    a = admin()
    try:
        a.create_topics({name: {"num_partitions": partitions, "replication_factor": 1}},
                        wait_for_metadata=True)
    finally:
        a.close()
    return name


def converged(members, n_partitions=6):
    lasts = [m.last for m in members]
    if any(x is None for x in lasts):
        return False
    gens = {m.generation() for m in members}
    total = sum(len(x["partitions"]) for x in lasts)
    same_gen = len({x["generation"] for x in lasts}) == 1 and gens == {lasts[0]["generation"]}
    return same_gen and total == n_partitions


def leader_of(members):
    calls = [(m.assignor.assign_calls[-1]["at"], m) for m in members if m.assignor.assign_calls]
    return max(calls, key=lambda c: c[0])[1] if calls else None


def show_state(members):
    for m in members:
        last = m.last or {}
        ud = last.get("user_data") or {}
        say(f"    {m.member_name}: gen={last.get('generation')} active={last.get('partitions')} "
            f"standby={ud.get('standby')} (user data from leader {ud.get('leader')}, "
            f"leader saw {ud.get('leader_saw')})")


# offsets each member claims to hold locally: member i is most caught up on p{i}, p{i+3}
def offsets_for(i):
    return {f"p{p}": (100 if p % 3 == i else 10 * (i + 1)) for p in range(6)}


# --------------------------------------------------------------------------
def phase_eager():
    say("\n== eager: 3 members, custom assignor with user data both ways (kafka-python)")
    topic = make_topic(f"spike-eager-{RUN}")
    group = f"spike-eager-{RUN}"
    members = [Member(f"m{i}", group, topic, offsets_for(i)) for i in range(3)]
    for m in members:
        m.start()
    ok = wait_until(lambda: converged(members), 60)
    check("eager", "group converged to one generation covering 6 partitions", ok)
    leader = leader_of(members)
    show_state(members)
    if leader:
        call = leader.assignor.assign_calls[-1]
        say(f"    leader {leader.member_name}'s last assign() saw user data: {json.dumps(call['seen'], sort_keys=True)}")
        check("eager", "leader's assign() saw all 3 members' user data",
              sorted(call["seen"]) == ["m0", "m1", "m2"]
              and all(call["seen"][f"m{i}"] == offsets_for(i) for i in range(3)))
    for i, m in enumerate(members):
        ud = (m.last or {}).get("user_data") or {}
        check("eager", f"{m.member_name}.on_assignment received its own user data from the leader",
              ud.get("for") == m.member_name and ud.get("leader_saw") == ["m0", "m1", "m2"])
        check("eager", f"{m.member_name} got the tasks it is most caught up on (lag-aware plan applied)",
              (m.last or {}).get("partitions") == sorted([f"p{i}", f"p{i + 3}"]))
    for m in members:
        m.shutdown()


def phase_coop():
    say("\n== coop: cooperative (KIP-429) rebalance with the custom assignor (kafka-python)")
    topic = make_topic(f"spike-coop-{RUN}")
    group = f"spike-coop-{RUN}"
    coop = RebalanceProtocol.COOPERATIVE
    a = Member("A", group, topic, {"p0": 100, "p1": 100, "p2": 50}, coop)
    b = Member("B", group, topic, {"p3": 100, "p4": 100, "p5": 50}, coop)
    for m in (a, b):
        m.start()
    ok = wait_until(lambda: converged([a, b]), 60)
    show_state([a, b])
    check("coop", "A+B converged (3 tasks each)", ok
          and a.last["partitions"] == ["p0", "p1", "p2"] and b.last["partitions"] == ["p3", "p4", "p5"])
    gen_before = a.generation()
    a.events.clear(), b.events.clear()
    c = Member("C", group, topic, {"p2": 90, "p5": 90}, coop)
    c.start()
    ok = wait_until(lambda: converged([a, b, c]) and c.last["partitions"] == ["p2", "p5"], 60)
    show_state([a, b, c])
    say(f"    generations: before C joined {gen_before}, after {a.generation()}; "
        f"listener events A={a.events} B={b.events} C={c.events}")
    withheld = [call["withheld"] for m in (a, b, c) for call in m.assignor.assign_calls if call["withheld"]]
    say(f"    leader withheld (owned elsewhere) in round 1: {withheld}")
    check("coop", "C ends with p2,p5; A keeps p0,p1; B keeps p3,p4", ok
          and a.last["partitions"] == ["p0", "p1"] and b.last["partitions"] == ["p3", "p4"])
    check("coop", "A and B revoked only the moving task (no stop-the-world revoke)",
          ("revoked", ["p2"]) in a.events and ("revoked", ["p5"]) in b.events
          and all(not (k == "revoked" and len(v) > 1) for k, v in a.events + b.events))
    check("coop", "two rounds: moving tasks were withheld in round 1, then handed over",
          bool(withheld) and a.generation() >= gen_before + 2)
    check("coop", "user data still flows both ways in cooperative mode",
          c.last["user_data"]["for"] == "C" and c.last["user_data"]["leader_saw"] == ["A", "B", "C"])
    for m in (a, b, c):
        m.shutdown()


def phase_static():
    say("\n== static: static membership (group_instance_id), restart within session timeout")
    topic = make_topic(f"spike-static-{RUN}")
    group = f"spike-static-{RUN}"
    ids = {f"s{i}": f"hs-{RUN}-s{i}" for i in range(3)}
    mk = lambda i, offs: Member(f"s{i}", group, topic, offs, instance_id=ids[f"s{i}"],  # noqa: E731
                                session_timeout_ms=30000)
    members = [mk(i, offsets_for(i)) for i in range(3)]
    for m in members:
        m.start()
    ok = wait_until(lambda: converged(members), 60)
    show_state(members)
    check("static", "3 static members converged", ok)
    leader = leader_of(members)
    victim_idx = next(i for i, m in enumerate(members) if m is not leader)
    victim = members[victim_idx]
    others = [m for m in members if m is not victim]
    gen0 = leader.generation()
    calls0 = sum(len(m.assignor.assign_calls) for m in members)
    for m in others:
        m.events.clear()
    old_parts = victim.last["partitions"]
    say(f"    leader={leader.member_name}; closing {victim.member_name} (static: no LeaveGroup) and restarting it")
    victim.shutdown()
    time.sleep(2)
    again = mk(victim_idx, offsets_for(victim_idx))
    members[victim_idx] = again
    again.start()
    ok = wait_until(lambda: again.last is not None, 30)
    time.sleep(4)  # give a rebalance, if any, time to show
    calls1 = sum(len(m.assignor.assign_calls) for m in members)
    say(f"    generation {gen0} -> {leader.generation()}; assign() calls {calls0} -> {calls1}; "
        f"restarted member got {again.last and again.last['partitions']} gen {again.last and again.last['generation']}; "
        f"others' listener events {[(m.member_name, m.events) for m in others]}")
    check("static", "restart with unchanged user data: no rebalance (same generation, leader did not re-assign)",
          ok and leader.generation() == gen0 and calls1 == calls0 and not any(m.events for m in others))
    check("static", "restarted member got its previous assignment + user data back from the broker",
          ok and again.last["partitions"] == old_parts and again.last["user_data"]["for"] == again.member_name)

    # Now restart it claiming different local state (e.g. its store was wiped).
    for m in others:
        m.events.clear()
    gen1 = leader.generation()
    again.shutdown()
    time.sleep(2)
    wiped = {f"p{p}": 0 for p in range(6)}
    again2 = mk(victim_idx, wiped)
    members[victim_idx] = again2
    again2.start()
    wait_until(lambda: again2.last is not None, 30)
    time.sleep(4)
    last_call = leader_of(members).assignor.assign_calls[-1]
    saw_new = last_call["seen"].get(again2.member_name) == wiped
    say(f"    changed user data: generation {gen1} -> {leader.generation()}; leader's latest assign() "
        f"saw the new offsets: {saw_new}")
    observe("static", "restart with CHANGED user data triggers a rebalance (leader sees new offsets)",
            leader.generation() > gen1 and saw_new)
    if not saw_new:
        # kafka-python has no public enforce_rebalance(); the coordinator's
        # request_rejoin() makes the member send JoinGroup again.
        # A plain rejoin with identical metadata is not enough: the broker
        # already stored the changed metadata at the static rejoin, so it
        # sees nothing new. Bump a nonce in the user data, then rejoin.
        again2.assignor.nonce += 1
        again2.consumer._coordinator.request_rejoin()
        saw_new = wait_until(lambda: any(c["seen"].get(again2.member_name) == wiped
                                         for m in members for c in m.assignor.assign_calls), 30)
        say(f"    after member-side request_rejoin(): generation -> {leader.generation()}; leader saw new offsets: {saw_new}")
        check("static", "a static member can force a rebalance so the leader sees its changed user data "
              "(private coordinator.request_rejoin())", saw_new)
    for m in members:
        m.shutdown()


def _observer(group):
    return KafkaConsumer(bootstrap_servers=BOOTSTRAP, group_id=group, enable_auto_commit=False,
                         client_id="spike-observer")


def _read_committed_values(topic):
    c = KafkaConsumer(bootstrap_servers=BOOTSTRAP, isolation_level="read_committed",
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      consumer_timeout_ms=3000, client_id="spike-reader")
    c.assign([TopicPartition(topic, 0)])
    vals = [r.value for r in c]
    c.close()
    return vals


def phase_eos():
    say("\n== eos: kafka-python group_metadata() + send_offsets_to_transaction()")
    src = make_topic(f"spike-eos-in-{RUN}")
    out = make_topic(f"spike-eos-out-{RUN}", partitions=1)
    group = f"spike-eos-{RUN}"
    m = Member("e0", group, src, offsets_for(0))
    m.start()
    check("eos", "member joined", wait_until(lambda: converged([m]), 60))
    gm = m.consumer.group_metadata()
    say(f"    group_metadata() = {gm}")
    check("eos", "KafkaConsumer.group_metadata() carries generation + member id",
          gm.generation_id > 0 and bool(gm.member_id))
    p = KafkaProducer(bootstrap_servers=BOOTSTRAP, transactional_id=f"spike-tx-{RUN}")
    p.init_transactions()
    tp = TopicPartition(src, 0)
    p.begin_transaction()
    p.send(out, b"committed-by-kafka-python", partition=0)
    p.send_offsets_to_transaction({tp: OffsetAndMetadata(42, "kp-txn", -1)}, gm)
    p.commit_transaction()
    obs = _observer(group)
    got = obs.committed(tp)
    say(f"    committed offset read back by a separate client: {got}")
    check("eos", "transactional offsets commit visible after commit_transaction()", got == 42)
    check("eos", "transactional record visible to a read_committed reader",
          b"committed-by-kafka-python" in _read_committed_values(out))

    stale = ConsumerGroupMetadata(group_id=group, generation_id=gm.generation_id + 5,
                                  member_id=gm.member_id, group_instance_id=None)
    p.begin_transaction()
    p.send(out, b"should-be-aborted", partition=0)
    err = None
    try:
        p.send_offsets_to_transaction({tp: OffsetAndMetadata(99, "stale", -1)}, stale)
        p.commit_transaction()
    except Exception as exc:  # noqa: BLE001
        err = exc
        try:
            p.abort_transaction()
        except Exception as exc2:  # noqa: BLE001
            say(f"    abort after fencing error raised {exc2!r}")
    say(f"    stale generation -> {err!r}; committed offset now {obs.committed(tp)}")
    check("eos", "stale generation is fenced by the broker (KIP-447)",
          err is not None and obs.committed(tp) == 42)
    obs.close()
    p.close()
    m.shutdown()


# librdkafka's public C API can build a group-metadata object from parts
# (rd_kafka_consumer_group_metadata_new_with_genid); confluent-kafka's Python
# binding only exposes the serialized form (bytes), so we build it via ctypes
# against the librdkafka that ships in the confluent-kafka wheel.
def cgmd_bytes(group_id, generation_id, member_id, group_instance_id=None):
    libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(
        __import__("confluent_kafka").__file__)), "confluent_kafka.libs", "librdkafka*.so*"))
    lib = ctypes.CDLL(libs[0]) if libs else ctypes.CDLL("librdkafka.so.1")
    new = lib.rd_kafka_consumer_group_metadata_new_with_genid
    new.restype, new.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_char_p]
    write = lib.rd_kafka_consumer_group_metadata_write
    write.restype = ctypes.c_void_p
    write.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
    lib.rd_kafka_consumer_group_metadata_destroy.argtypes = [ctypes.c_void_p]
    lib.rd_kafka_mem_free.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    h = new(group_id.encode(), generation_id, member_id.encode(),
            group_instance_id.encode() if group_instance_id else None)
    buf, size = ctypes.c_void_p(), ctypes.c_size_t()
    try:
        if write(h, ctypes.byref(buf), ctypes.byref(size)):
            raise RuntimeError("rd_kafka_consumer_group_metadata_write failed")
        blob = ctypes.string_at(buf, size.value)
        lib.rd_kafka_mem_free(None, buf)
        return blob
    finally:
        lib.rd_kafka_consumer_group_metadata_destroy(h)


def cgmd_bytes_pure(group_id, generation_id, member_id, group_instance_id=None):
    """Same blob without ctypes: librdkafka's private v2 layout as observed
    (magic, host-order int32 generation, NUL-terminated strings, null flag)."""
    tail = b"\x01" if group_instance_id is None else b"\x00" + group_instance_id.encode() + b"\x00"
    return (b"CGMDv2:" + struct.pack("=i", generation_id) + group_id.encode() + b"\x00"
            + member_id.encode() + b"\x00" + tail)


def phase_xclient():
    say("\n== xclient: kafka-python member + confluent-kafka transactional producer")
    import confluent_kafka as ck
    src = make_topic(f"spike-x-in-{RUN}")
    out = make_topic(f"spike-x-out-{RUN}", partitions=1)
    group = f"spike-x-{RUN}"
    m = Member("x0", group, src, offsets_for(0))
    m.start()
    check("xclient", "kafka-python member joined", wait_until(lambda: converged([m]), 60))
    gm = m.consumer.group_metadata()
    blob = cgmd_bytes(gm.group_id, gm.generation_id, gm.member_id, gm.group_instance_id)
    say(f"    kafka-python {gm.generation_id=} {gm.member_id=} -> librdkafka blob {blob!r}")
    check("xclient", "pure-Python encoding equals librdkafka's own serialization",
          blob == cgmd_bytes_pure(gm.group_id, gm.generation_id, gm.member_id, gm.group_instance_id))
    check("xclient", "confluent_kafka exposes no ConsumerGroupMetadata constructor",
          not hasattr(ck, "ConsumerGroupMetadata"))
    p = ck.Producer({"bootstrap.servers": BOOTSTRAP, "transactional.id": f"spike-ck-tx-{RUN}"})
    p.init_transactions(30)
    tp = TopicPartition(src, 1)
    p.begin_transaction()
    p.produce(out, b"committed-by-confluent", partition=0)
    p.send_offsets_to_transaction([ck.TopicPartition(src, 1, 77)], blob, 30)
    p.commit_transaction(30)
    obs = _observer(group)
    got = obs.committed(tp)
    say(f"    committed offset read back: {got}")
    check("xclient", "confluent producer committed offsets for the kafka-python member's group", got == 77)
    check("xclient", "record visible to read_committed reader",
          b"committed-by-confluent" in _read_committed_values(out))
    p.begin_transaction()
    p.produce(out, b"should-be-aborted", partition=0)
    err = None
    try:
        stale = cgmd_bytes(gm.group_id, gm.generation_id + 5, gm.member_id, gm.group_instance_id)
        p.send_offsets_to_transaction([ck.TopicPartition(src, 1, 99)], stale, 30)
        p.commit_transaction(30)
    except ck.KafkaException as exc:
        err = exc
        if exc.args[0].txn_requires_abort():
            p.abort_transaction(30)
    say(f"    stale generation -> {err!r}; committed now {obs.committed(tp)}")
    check("xclient", "stale generation fenced for the cross-client commit too",
          err is not None and obs.committed(tp) == 77)
    obs.close()
    m.shutdown()


def phase_aiokafka():
    say("\n== aiokafka 0.14: custom assignor with user data; send_offsets_to_transaction")
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor as AioAbstract
    from aiokafka.coordinator.protocol import (ConsumerProtocolMemberAssignment,
                                               ConsumerProtocolMemberMetadata)
    from aiokafka.structs import OffsetAndMetadata as AioOAM, TopicPartition as AioTP

    topic = make_topic(f"spike-aio-{RUN}")
    group = f"spike-aio-{RUN}"

    def make_assignor(name, offsets):
        # aiokafka declares the hooks as classmethods, so per-member state has
        # to live on a per-member class.
        class AioSpike(AioAbstract):
            received: list = []
            seen: list = []

            @classmethod
            def metadata(cls, topics):
                ud = json.dumps({"member": name, "task_offsets": offsets}).encode()
                return ConsumerProtocolMemberMetadata(0, sorted(topics), ud)

            @classmethod
            def assign(cls, cluster, members):
                seen = {mid: json.loads(md.user_data) for mid, md in members.items()}
                cls.seen.append({v["member"]: v["task_offsets"] for v in seen.values()})
                tps = sorted(cluster.partitions_for_topic(topic))
                target = plan([f"p{p}" for p in tps], seen)
                return {mid: ConsumerProtocolMemberAssignment(
                    0, [(topic, sorted(int(t[1:]) for t in tasks["active"]))],
                    json.dumps({"for": seen[mid]["member"], "standby": tasks["standby"]}).encode())
                    for mid, tasks in target.items()}

            @classmethod
            def on_assignment(cls, assignment):
                cls.received.append(json.loads(assignment.user_data))

        AioSpike.name = "hotstate-spike"
        return AioSpike

    async def main():
        names = ["a0", "a1"]
        assignors = [make_assignor(n, offsets_for(i)) for i, n in enumerate(names)]
        consumers = [AIOKafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group,
                                      partition_assignment_strategy=(asg,), enable_auto_commit=False,
                                      client_id=n) for n, asg in zip(names, assignors)]
        for c in consumers:
            await c.start()

        async def pump(c):
            while True:
                await c.getmany(timeout_ms=200)
        tasks = [asyncio.create_task(pump(c)) for c in consumers]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (all(len(c.assignment()) == 3 for c in consumers)
                    and any(a.seen and len(a.seen[-1]) == 2 for a in assignors)):
                break
            await asyncio.sleep(0.3)
        leader = next((a for a in assignors if a.seen), None)
        say(f"    leader saw: {leader and leader.seen[-1]}")
        say(f"    received: {[a.received[-1] if a.received else None for a in assignors]}")
        check("aiokafka", "leader's assign() saw both members' user data",
              leader is not None and sorted(leader.seen[-1]) == names)
        check("aiokafka", "each member's on_assignment received its own user data",
              all(a.received and a.received[-1]["for"] == n for a, n in zip(assignors, names)))
        prod = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP, transactional_id=f"spike-aio-tx-{RUN}")
        await prod.start()
        err = None
        try:
            async with prod.transaction():
                await prod.send_and_wait(topic, b"aio", partition=0)
                await prod.send_offsets_to_transaction({AioTP(topic, 0): AioOAM(11, "")}, group)
        except Exception as exc:  # noqa: BLE001
            err = exc
        await prod.stop()
        first_aio = await consumers[0].committed(AioTP(topic, 0))
        obs = _observer(group)
        got = obs.committed(TopicPartition(topic, 0))
        obs.close()
        later_aio = await consumers[0].committed(AioTP(topic, 0))
        say(f"    aiokafka send_offsets_to_transaction(group_id str) -> error={err!r}; committed: aiokafka "
            f"read right after commit={first_aio}, kafka-python observer={got}, aiokafka again={later_aio}")
        observe("aiokafka", "aiokafka's committed() right after commit_transaction() already sees the "
                "offset (it never sets OffsetFetch require_stable, so a read can race the txn markers)",
                first_aio == 11)
        check("aiokafka", "send_offsets_to_transaction (group id only, TxnOffsetCommit v0) works on 4.4",
              err is None and got == 11, "no KIP-447 generation fencing possible with this API")
        for t in tasks:
            t.cancel()
        for c in consumers:
            await c.stop()

    asyncio.run(main())


PHASES = {"eager": phase_eager, "coop": phase_coop, "static": phase_static,
          "eos": phase_eos, "xclient": phase_xclient, "aiokafka": phase_aiokafka}


def main():
    global BOOTSTRAP
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default=BOOTSTRAP)
    ap.add_argument("--only", default=",".join(PHASES), help="comma-separated phases")
    ap.add_argument("-v", "--verbose", action="store_true", help="kafka-python INFO logs")
    args = ap.parse_args()
    BOOTSTRAP = args.bootstrap
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(asctime)s %(threadName)s %(name)s %(message)s")
    import aiokafka
    import confluent_kafka
    import kafka
    say(f"bootstrap={BOOTSTRAP} kafka-python={kafka.__version__} aiokafka={aiokafka.__version__} "
        f"confluent-kafka={confluent_kafka.version()[0]} librdkafka={confluent_kafka.libversion()[0]} run={RUN}")
    for name in args.only.split(","):
        try:
            PHASES[name]()
        except Exception as exc:  # noqa: BLE001
            check(name, "phase ran without an unexpected exception", False, repr(exc))
    failed = [r for r in RESULTS if not r[1]]
    say(f"\n{len(RESULTS) - len(failed)} passed, {len(failed)} failed")
    for phase, _, what in failed:
        say(f"  failed: {phase}: {what}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
