"""Lookup joins (``stream.join(hdb.table(...), ...)``): typed, pruned and lowered.

A lookup join is stateless: its operator (``operators/lookup.py``) goes into the stage the
stream is in, after the fused kernel before it, and runs as ordered replicas when asked
(``set_parallelism(n)`` on the join, or ``StreamingConfig(parallelism=)``), all sharing one
index of the table.  It reads the stream's key columns and the columns later steps read; of
the table it reads the key columns and the columns later steps read.

Examples
--------
>>> import heliosdb as hdb, pyarrow as pa
>>> env = hdb.StreamEnvironment()
>>> users = hdb.table(pa.table({"id": [1, 2], "name": ["ann", "bob"], "age": [30, 40]}))
>>> s = env.from_iterable([{"user": 1, "v": 2.0}]).join(users, left_on="user", right_on="id")
>>> s.schema.names
['user', 'v', 'name', 'age']
>>> print(s.select("v", "name").explain())  # doctest: +ELLIPSIS
batch_size=...
  lookup join[lookup_join-2] (inner on user=id; arrow table (2 rows, columns id, name, age))
...
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional, Set, Tuple

import pyarrow as pa

from ..logical import Node
from ..operators.lookup import LookupJoinOperator, join_columns
from .context import At, Lowering
from .parallelism import fused_replicas


def lookup_schema(n: Node, schema: pa.Schema, wm_time: Optional[str]) -> pa.Schema:
    """The output schema of lookup join ``n`` over input ``schema`` (checks its keys)."""
    s = n.step
    return join_columns(schema, s.table.schema, s.left_on, s.right_on, s.suffix, n.name).output


def lookup_inputs(n: Node, schema: pa.Schema, after: Optional[Set[str]]) -> Optional[Set[str]]:
    """The input columns lookup join ``n`` reads when later steps read ``after`` (None: all)."""
    if after is None:
        return None
    cols = join_columns(schema, n.step.table.schema, n.step.left_on, n.step.right_on, n.step.suffix, n.name)
    left, _ = cols.pruned(after)
    return set(left) | set(n.step.left_on)


def lower_lookup(low: Lowering, node: Node, at: At) -> Tuple[Node, At]:
    """The lookup join operator, in the stage the stream is in."""
    s = node.step
    op = LookupJoinOperator(node.name, at.schema, s.table, s.left_on, s.right_on, s.how, s.suffix,
                            low.needed_after(node, at.wm_time))
    op.parallel = fused_replicas([node], low.config)
    low.add(at, op)
    low.state_ops.append(op)            # its table's bytes and reloads in the metrics
    return node, replace(at, schema=op.output_schema)
