"""``stream.split()`` and its branches (Kafka Streams' ``KStream.split`` / ``BranchedKStream``).

A record goes to the first branch whose predicate is true, and to that branch only; a record no predicate takes
goes to the default branch, or is dropped when there is none. Branching is stateless and record by record: the
branches stay in the sub-topology of the split stream.

The keys of the returned dict follow Kafka Streams' ``BranchedKStreamImpl``: the split's name (``split(name=)``,
else a generated ``KSTREAM-BRANCH-<n>`` with n counted per app in build order) followed by the branch's name,
or by its position when it has none (1 for the first ``branch``, 2 for the next, ...; 0 for the default branch).
So ``split(name="s-").branch(p, name="a")`` is ``"s-a"``. Kafka Streams' ``Branched.withFunction`` /
``withConsumer`` are one ``chain=`` here: ``chain(branch_stream)`` is called at once; what it returns (a Stream)
is the dict's entry for that branch, and a branch whose chain returns None is not in the dict.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..errors import TopologyError
from .nodes import Node, PassThroughNode

if TYPE_CHECKING:
    from .stream import Stream


class BranchNode(Node):
    """Forwards each record to one child: the first whose predicate is true, else the default (the child whose
    predicate is None), else none. ``children`` lists every branch (so a walk of the graph reaches them all)."""

    __slots__ = ("predicates",)

    def __init__(self) -> None:
        super().__init__()
        self.predicates: list[Callable[[Any, Any], bool] | None] = []

    def add(self, predicate: Callable[[Any, Any], bool] | None) -> Node:
        child = PassThroughNode()
        self.children.append(child)
        self.predicates.append(predicate)
        return child

    def process(self, key: Any, value: Any, ctx: Any) -> None:
        default = None
        for predicate, child in zip(self.predicates, self.children):
            if predicate is None:
                default = child
            elif predicate(key, value):
                child.process(key, value, ctx)
                return
        if default is not None:
            default.process(key, value, ctx)


class BranchedStream:
    """What ``Stream.split()`` returns: add branches with ``branch``, end with ``default_branch`` or
    ``no_default_branch``, which return the branches by name (see the module docstring)."""

    def __init__(self, stream: "Stream", prefix: str):
        self._stream = stream
        self._prefix = prefix
        self._node = BranchNode()
        stream._node.children.append(self._node)
        self._branches: dict[str, "Stream"] = {}
        self._keys: set[str] = set()
        self._count = 0
        self._ended = False

    def branch(self, predicate: Callable[[Any, Any], bool], name: str | None = None,
               chain: Callable[["Stream"], "Stream | None"] | None = None) -> "BranchedStream":
        """Records for which ``predicate(key, value)`` is true, unless an earlier branch took them."""
        if not callable(predicate):
            raise TopologyError(f"split().branch(): predicate must be a callable (key, value) -> bool, got "
                                f"{type(predicate).__name__}")
        self._count += 1
        self._add(predicate, name, self._count, chain, "branch()")
        return self

    def default_branch(self, name: str | None = None,
                       chain: Callable[["Stream"], "Stream | None"] | None = None) -> dict[str, "Stream"]:
        """Records no branch took; ends the split and returns the branches."""
        self._add(None, name, 0, chain, "default_branch()")
        return self._end()

    def no_default_branch(self) -> dict[str, "Stream"]:
        """Ends the split: records no branch took are dropped. Returns the branches."""
        self._check_open("no_default_branch()")
        return self._end()

    def _add(self, predicate: Callable[[Any, Any], bool] | None, name: str | None, index: int,
             chain: Callable[["Stream"], "Stream | None"] | None, op: str) -> None:
        self._check_open(op)
        if name is not None and not isinstance(name, str):
            raise TopologyError(f"split().{op}: name must be a str or None, got {type(name).__name__}")
        if chain is not None and not callable(chain):
            raise TopologyError(f"split().{op}: chain must be a callable (stream) -> stream or None")
        key = self._prefix + (name if name is not None else str(index))
        if key in self._keys:
            raise TopologyError(f"split().{op}: a branch named {key!r} exists already in this split")
        self._keys.add(key)
        s = self._stream
        from .stream import Stream
        branch = Stream(s._topology, s._sub, self._node.add(predicate), s.key_serde, s.value_serde, s._key_changed)
        result = branch if chain is None else chain(branch)
        if result is not None:
            self._branches[key] = result

    def _check_open(self, op: str) -> None:
        if self._ended:
            raise TopologyError(f"split().{op}: this split has ended (default_branch() or no_default_branch() "
                                "was called)")

    def _end(self) -> dict[str, "Stream"]:
        self._ended = True
        return dict(self._branches)
