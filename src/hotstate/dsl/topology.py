"""A topology: sub-topologies, each a connected part of the processing graph with one or more source topics
and its own stores (Kafka Streams' node groups).

A task is partition p of one sub-topology: it reads partition p of every source topic of its sub-topology (a
partition group), and its id is ``<subtopology>_<partition>`` as in Kafka Streams. Sub-topologies are numbered
by build order: ``merge`` joins two into one (the later ones are renumbered), a repartition topic starts a new
one. The numbering is part of the state dir layout (task directories), so changing the topology renumbers
tasks, as in Kafka Streams.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import TopologyError
from ..state.store import StoreSpec
from .nodes import ProcessorNode, RepartitionSinkNode, SinkNode, SourceNode, walk


@dataclass
class RepartitionTopic:
    """An internal topic ``<app_id>-<name>-repartition`` between two sub-topologies. ``partitions``: as given to
    ``repartition(partitions=N)``, else None until the app starts, which takes the upstream sub-topology's
    source partition count (``Topology.resolve_partitions``)."""

    name: str
    topic: str
    upstream: "SubTopology"
    partitions: int | None = None
    fixed: bool = False  # partitions given by the user
    # A join's repartition: the topic takes the partition count of the table's topic it is joined with
    # (as Kafka Streams sizes a join's repartition topic), unless ``partitions`` was given.
    copartition_with: str | None = None


@dataclass(eq=False)
class SubTopology:
    id: int
    sources: list[SourceNode]
    stores: dict[str, StoreSpec] = field(default_factory=dict)
    sink_topics: set[str] = field(default_factory=set)  # user topics written (repartition topics are not here)
    merged_into: "SubTopology | None" = None  # set when merge() joined this one into another

    @property
    def source_topics(self) -> list[str]:
        return [s.topic for s in self.sources]

    def source_for(self, topic: str) -> SourceNode:
        for s in self.sources:
            if s.topic == topic:
                return s
        raise KeyError(topic)

    def processor_nodes(self) -> list[ProcessorNode]:
        """The nodes of ``stream.process(ProcessorClass, ...)``: each task makes its own instance of each."""
        seen: set[int] = set()
        out = []
        for source in self.sources:
            for n in walk(source):
                if isinstance(n, ProcessorNode) and id(n) not in seen:
                    seen.add(id(n))
                    out.append(n)
        return out


class Topology:
    def __init__(self, app_id: str = "") -> None:
        self.app_id = app_id
        self.subtopologies: list[SubTopology] = []
        self.repartitions: dict[str, RepartitionTopic] = {}  # topic -> its spec, in build order
        self._generated_names = 0
        self._generated_splits = 0  # apart from repartition names: a split added must not rename repartition topics
        self._generated_stores = 0
        self.owned_stores: dict[str, str] = {}  # store name -> the operation that materialises it
        # Global tables (dsl/global_table.py), by store name: in no sub-topology (no task, no changelog).
        self.global_tables: dict[str, Any] = {}

    # ---- building ----
    def add_source(self, source: SourceNode) -> SubTopology:
        self._check_new_source(source.topic)
        sub = SubTopology(len(self.subtopologies), [source])
        self.subtopologies.append(sub)
        return sub

    def _check_new_source(self, topic: str) -> None:
        if any(t.topic == topic for t in self.global_tables.values()):
            raise TopologyError(f"topic {topic!r} is already the topic of a global table of this app; a topic is "
                                "read either as a global table or as a stream")
        for sub in self.subtopologies:
            if topic in sub.sink_topics:
                raise TopologyError(f"topic {topic!r} is both a source and a sink of this app")
            if topic in sub.source_topics:
                raise TopologyError(
                    f"topic {topic!r} is already a source of this app; call app.stream() once per topic "
                    "and branch the stream it returns"
                )

    def resolve(self, sub: SubTopology) -> SubTopology:
        """The live sub-topology ``sub`` now belongs to (itself, or the one a merge joined it into)."""
        while sub.merged_into is not None:
            sub = sub.merged_into
        return sub

    def merge(self, a: SubTopology, b: SubTopology) -> SubTopology:
        """Joins two sub-topologies into one (``Stream.merge``): the earlier keeps its place, the later's
        sources, stores and sinks move into it, and the sub-topologies after it are renumbered."""
        a, b = self.resolve(a), self.resolve(b)
        if a is b:
            return a
        if b.id < a.id:
            a, b = b, a
        a.sources.extend(b.sources)
        for name, spec in b.stores.items():
            a.stores[name] = spec
        a.sink_topics |= b.sink_topics
        b.merged_into = a
        self.subtopologies.remove(b)
        for i, sub in enumerate(self.subtopologies):
            sub.id = i
        for rep in self.repartitions.values():
            rep.upstream = self.resolve(rep.upstream)
        return a

    def repartition_name(self) -> str:
        """A generated repartition name, deterministic in build order (Kafka Streams'
        ``KSTREAM-REPARTITION-0000000003``): adding one before it renames the later ones."""
        name = f"KSTREAM-REPARTITION-{self._generated_names:010d}"
        self._generated_names += 1
        return name

    def split_name(self) -> str:
        """A generated name of an unnamed ``split()`` (Kafka Streams' ``KSTREAM-BRANCH-0000000003``), the prefix of
        its branches' names."""
        name = f"KSTREAM-BRANCH-{self._generated_splits:010d}"
        self._generated_splits += 1
        return name

    def repartition_topic(self, name: str) -> str:
        return f"{self.app_id}-{name}-repartition"

    def add_repartition(self, upstream: SubTopology, sink: RepartitionSinkNode, source: SourceNode,
                        name: str, partitions: int | None) -> SubTopology:
        """A repartition topic: ``sink`` ends ``upstream``, ``source`` starts a new sub-topology (returned)."""
        topic = sink.topic
        if topic in self.repartitions:
            raise TopologyError(f"repartition(name={name!r}): a repartition topic of that name exists already in "
                                "this app; give each repartition its own name")
        self._check_new_source(topic)
        spec = RepartitionTopic(name, topic, self.resolve(upstream), partitions, fixed=partitions is not None)
        self.repartitions[topic] = spec
        sink.spec = spec
        sub = SubTopology(len(self.subtopologies), [source])
        self.subtopologies.append(sub)
        return sub

    def add_global_table(self, table: Any) -> None:
        """``App.global_table``: its store name must be unique among all stores, its topic no other source."""
        name, topic = table.store.name, table.topic
        if name in self.global_tables or name in self.store_specs():
            raise TopologyError(f"global_table({topic!r}): store {name!r} is used already in this app; give each "
                                "store its own name")
        if any(t.topic == topic for t in self.global_tables.values()):
            raise TopologyError(f"global_table({topic!r}): the topic is already a global table of this app; "
                                "call app.global_table() once per topic and join or query that table")
        if topic in self.source_topics or any(topic in s.sink_topics for s in self.subtopologies):
            raise TopologyError(f"global_table({topic!r}): the topic is already a source or a sink of this app; a "
                                "topic is read either as a global table or as a stream")
        self.global_tables[name] = table

    def add_store(self, sub: SubTopology, spec: StoreSpec) -> None:
        if spec.name in self.global_tables:
            raise TopologyError(f"store {spec.name!r} is the store of a global table of this app; give this store "
                                "another name")
        sub = self.resolve(sub)
        for other in self.subtopologies:
            existing = other.stores.get(spec.name)
            if existing is None:
                continue
            if other is not sub:
                raise TopologyError(f"store {spec.name!r} is used by two sub-topologies; a store belongs to one")
            if existing != spec:
                raise TopologyError(f"store {spec.name!r} is declared twice with different settings")
        sub.stores[spec.name] = spec

    def claim_store(self, sub: SubTopology, spec: StoreSpec, op: str) -> None:
        """A store that ``op`` materialises (a table, an aggregation's result, a join's result): its name must
        be new in this app. ``process(stores=[...])`` may connect to it afterwards."""
        if spec.name in self.owned_stores or spec.name in self.store_specs():
            first = self.owned_stores.get(spec.name, "process(stores=...)")
            where = "" if spec.name in self.resolve(sub).stores else ", in two sub-topologies"
            raise TopologyError(f"{op}: store name {spec.name!r} is used twice (first by {first}{where}); give each "
                                "table, aggregation and join its own store name")
        self.add_store(sub, spec)
        self.owned_stores[spec.name] = op

    def internal_store_name(self, kind: str) -> str:
        """A generated store name, deterministic in build order (Kafka Streams' ``KTABLE-JOIN-STATE-STORE-0000000002``):
        it names the store's directory and changelog topic, so adding one before it renames the later ones."""
        name = f"{kind}-STATE-STORE-{self._generated_stores:010d}"
        self._generated_stores += 1
        return name

    def generated_store_name(self, prefix: str) -> str:
        """``<prefix>-0000000003-store`` (Kafka Streams' ``KSTREAM-JOINTHIS-0000000003-store``), numbered with
        the other generated store names, in build order."""
        name = f"{prefix}-{self._generated_stores:010d}-store"
        self._generated_stores += 1
        return name

    def add_sink(self, sub: SubTopology, sink: SinkNode) -> None:
        if sink.topic in self.repartitions or any(sink.topic in s.source_topics for s in self.subtopologies):
            raise TopologyError(f"topic {sink.topic!r} is both a source and a sink of this app")
        self.resolve(sub).sink_topics.add(sink.topic)

    # ---- reading ----
    @property
    def source_topics(self) -> list[str]:
        """Every topic a task reads: the user's source topics and the app's repartition topics."""
        return [t for s in self.subtopologies for t in s.source_topics]

    @property
    def user_source_topics(self) -> list[str]:
        return [t for t in self.source_topics if t not in self.repartitions]

    def subtopology_of(self, topic: str) -> SubTopology:
        for sub in self.subtopologies:
            if topic in sub.source_topics:
                return sub
        raise KeyError(topic)

    def store_specs(self) -> dict[str, StoreSpec]:
        return {name: spec for sub in self.subtopologies for name, spec in sub.stores.items()}

    def resolve_partitions(self, source_counts: dict[str, int]) -> dict[str, int]:
        """Partition counts of every source topic: ``source_counts`` (the user's topics, from the broker) and
        each repartition topic's (its ``partitions=``, else the largest of its upstream sub-topology's sources,
        as Kafka Streams does). Repartition topics are resolved in build order, so an upstream one is known."""
        counts = dict(source_counts)
        for topic, rep in self.repartitions.items():
            if not rep.fixed and rep.copartition_with is not None and rep.copartition_with in counts:
                rep.partitions = counts[rep.copartition_with]
            elif not rep.fixed:
                upstream = self.resolve(rep.upstream)
                known = [counts[t] for t in upstream.source_topics if t in counts]
                if not known:
                    raise TopologyError(f"repartition topic {topic!r}: the partition count of its upstream topics "
                                        f"{upstream.source_topics} is unknown; pass repartition(partitions=N)")
                rep.partitions = max(known)
            counts[topic] = rep.partitions  # type: ignore[assignment]
        return counts

    def check_copartitioning(self, counts: dict[str, int]) -> dict[int, int]:
        """Every source topic of one sub-topology must have the same partition count: task p reads partition p
        of each. Returns each sub-topology's partition count."""
        out = {}
        for sub in self.subtopologies:
            have = {t: counts[t] for t in sub.source_topics}
            if len(set(have.values())) > 1:
                raise TopologyError(
                    f"sub-topology {sub.id} reads topics with different partition counts {have} (merge() and joins "
                    "put streams and tables in one sub-topology, and a task reads partition p of each of its topics): "
                    "they must be "
                    "co-partitioned. Repartition the stream of the odd topic first, e.g. "
                    f"stream.repartition(partitions={max(have.values())}).merge(...), or give the topics the same "
                    "partition count")
            out[sub.id] = next(iter(have.values()))
        return out
