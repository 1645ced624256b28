"""The DSL: streams and tables that build a :class:`~hotstate.dsl.topology.Topology`."""
