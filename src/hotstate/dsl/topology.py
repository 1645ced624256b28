"""A topology: independent sub-topologies, each fed by one source topic, each with its own stores.

A task is one partition of one sub-topology; its id is ``<subtopology>_<partition>`` as in Kafka Streams.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import TopologyError
from ..state.store import StoreSpec
from .nodes import ProcessorNode, SinkNode, SourceNode, walk


@dataclass
class SubTopology:
    id: int
    source: SourceNode
    stores: dict[str, StoreSpec] = field(default_factory=dict)
    sink_topics: set[str] = field(default_factory=set)

    def processor_nodes(self) -> list[ProcessorNode]:
        """The nodes of ``stream.process(ProcessorClass, ...)``: each task makes its own instance of each."""
        return [n for n in walk(self.source) if isinstance(n, ProcessorNode)]


class Topology:
    def __init__(self) -> None:
        self.subtopologies: list[SubTopology] = []

    def add_source(self, source: SourceNode) -> SubTopology:
        for sub in self.subtopologies:
            if source.topic in sub.sink_topics:
                raise TopologyError(f"topic {source.topic!r} is both a source and a sink of this app")
            if sub.source.topic == source.topic:
                raise TopologyError(
                    f"topic {source.topic!r} is already a source of this app; call app.stream() once per topic "
                    "and branch the stream it returns"
                )
        sub = SubTopology(len(self.subtopologies), source)
        self.subtopologies.append(sub)
        return sub

    def add_store(self, sub: SubTopology, spec: StoreSpec) -> None:
        for other in self.subtopologies:
            existing = other.stores.get(spec.name)
            if existing is None:
                continue
            if other is not sub:
                raise TopologyError(f"store {spec.name!r} is used by two sub-topologies; a store belongs to one")
            if existing != spec:
                raise TopologyError(f"store {spec.name!r} is declared twice with different settings")
        sub.stores[spec.name] = spec

    def add_sink(self, sub: SubTopology, sink: SinkNode) -> None:
        if any(s.source.topic == sink.topic for s in self.subtopologies):
            raise TopologyError(f"topic {sink.topic!r} is both a source and a sink of this app")
        sub.sink_topics.add(sink.topic)

    @property
    def source_topics(self) -> list[str]:
        return [s.source.topic for s in self.subtopologies]

    def subtopology_of(self, topic: str) -> SubTopology:
        for sub in self.subtopologies:
            if sub.source.topic == topic:
                return sub
        raise KeyError(topic)

    def store_specs(self) -> dict[str, StoreSpec]:
        return {name: spec for sub in self.subtopologies for name, spec in sub.stores.items()}
