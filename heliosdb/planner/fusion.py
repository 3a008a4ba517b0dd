"""Fusion: consecutive stateless steps become ONE fused kernel (a ``FusedOperator``).

Expression steps (``filter``, ``select``, ``with_columns``) always fuse; ``map`` / ``filter`` /
``process`` functions fuse when they translate (``heliosdb.pyfunc``); ``unbatch()`` computes
nothing and joins the run.  A run ends at a step that does not fuse, or at a branch.  With
``HELIOSDB_FUSION=0`` every step is its own kernel.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable, Dict, Tuple, Type

import pyarrow as pa

from ..kernels.program import FusedProgram
from ..logical import (Filter, FilterFunction, MapFunction, Node, ProcessFunction, PyFunction, Select,
                       Step, Unbatch, WithColumns)
from ..operators.fused import FusedOperator
from ..pyfunc import plan_function
from .context import At, Lowering
from .parallelism import fused_replicas


def _apply_function(program: FusedProgram, node: Node) -> None:
    plan_function(node, program.output_schema()).apply(program)


#: How each fusable step adds itself to a fused program.
APPLY: Dict[Type[Step], Callable[[FusedProgram, Node], None]] = {
    Filter: lambda p, n: p.add_filter(n.step.predicate, n.name),
    WithColumns: lambda p, n: p.add_columns(dict(n.step.exprs), n.name),
    Select: lambda p, n: p.select(list(n.step.items), n.name),
    Unbatch: lambda p, n: None,
    FilterFunction: _apply_function,
    MapFunction: _apply_function,
    ProcessFunction: _apply_function,
}


def fusable(node: Node, schema: pa.Schema) -> bool:
    """Whether ``node`` runs in a fused kernel over input ``schema``: expression steps and
    ``unbatch()`` always, function steps when they compile.

    >>> from heliosdb.logical import Batch, MapFunction
    >>> schema = pa.schema([("v", pa.float64())])
    >>> [fusable(Node(step, None, "s"), schema) for step in
    ...  (Unbatch(), Batch(4), MapFunction(lambda e: {"w": e.v * 2}))]
    [True, False, True]
    """
    if isinstance(node.step, PyFunction):
        return plan_function(node, schema).compiled
    return type(node.step) in APPLY


def apply(program: FusedProgram, node: Node) -> None:
    """Add fusable step ``node`` to ``program``."""
    APPLY[type(node.step)](program, node)


def lower_fused(low: Lowering, node: Node, at: At) -> Tuple[Node, At]:
    """The fused kernel of ``node`` and the fusable steps after it (a run with no branch);
    returns the run's last step.  Outputs no later step reads are dropped."""
    program = FusedProgram.identity(at.schema)
    run, fused = node, [node]
    while True:
        apply(program, run)
        kids = low.plan.children(run)
        if not low.fuse or len(kids) != 1 or not fusable(kids[0], program.output_schema()):
            break
        run = kids[0]
        fused.append(run)
    program.prune(low.needed_after(run, at.wm_time))
    name = node.name if run is node else f"{node.name}..{run.name}"
    op = FusedOperator(program, name)
    if not low.explain:
        op.warm()
    if not program.is_identity():       # replicas of a kernel that does nothing: no
        op.parallel = fused_replicas(fused, low.config)
    low.add(at, op)
    return run, replace(at, schema=op.output_schema)
