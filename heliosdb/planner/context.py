"""What the planner's passes share while one job is planned.

:class:`Lowering` holds the job's logical plan and config and collects what lowering builds;
:class:`At` is where the stream is while it is lowered.  The lowering functions of
:mod:`heliosdb.planner.lower`, :mod:`~heliosdb.planner.fusion` and :mod:`~heliosdb.planner.keyed`
take both.

Examples
--------
>>> import pyarrow as pa
>>> at = At(0, pa.schema([("ts", pa.int64())]))
>>> at.stage, at.schema.names, at.wm_time
(0, ['ts'], None)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set

import pyarrow as pa

from ..config import StreamingConfig
from ..logical import LogicalPlan, Node
from ..operators.base import Operator
from ..runtime.physical import PhysicalStage


@dataclass(frozen=True)
class At:
    """Where the stream is while it is lowered: the stage its next operator goes into, the
    schema of its rows there, the time column of the watermark it carries (None: none), and
    the node it comes from (``via``: a join takes it to know which of its inputs it is)."""

    stage: int
    schema: pa.Schema
    wm_time: Optional[str] = None
    via: Optional[Node] = None


@dataclass
class Lowering:
    """One job's lowering: its logical ``plan`` and ``config``; ``explain`` (bind and compile
    nothing); ``fuse`` (fusion on); ``schemas`` (node id -> output schema, typed once);
    ``needed_after`` (the pruning pass: columns of a node's output later steps read, None: all);
    ``walk`` (lowers a node and what follows it).  Lowering fills ``stages``, ``sink_ops`` and
    ``state_ops``; ``joins`` holds, for each join whose other input is not lowered yet, where
    the first one arrived (join node id -> side -> :class:`At`)."""

    config: StreamingConfig
    plan: LogicalPlan
    explain: bool
    fuse: bool
    schemas: Dict[int, pa.Schema]
    needed_after: Callable[[Node, Optional[str]], Optional[Set[str]]]
    walk: Callable[["Lowering", Node, At], None]
    stages: List[PhysicalStage] = field(default_factory=list)
    sink_ops: List[Operator] = field(default_factory=list)
    state_ops: List[Operator] = field(default_factory=list)
    joins: Dict[int, Dict[int, At]] = field(default_factory=dict)

    def lower(self, node: Node, at: At) -> None:
        """Lower ``node`` and every node after it that leads to a sink, from ``at`` on."""
        self.walk(self, node, at)

    def add(self, at: At, op: Operator) -> None:
        """Append ``op`` to the stage the stream is at."""
        self.stages[at.stage].operators.append(op)
