"""Stream joins: window, interval, as-of and regular joins of two inputs, compiled and
checkpointed.

- :class:`JoinSpec` (``spec.py``): what a join step asks for; :func:`output_schema` the rows
  it gives (Polars' column rules).
- :func:`make_join`: the operator of a spec, a :class:`JoinOperator` (``base.py``: two inputs,
  ``process_side(side, batch)``, the watermark, late rows, snapshots) of one of the kinds:
  ``window.py`` (windows of panes), ``session.py`` (session windows), ``symmetric.py``
  (interval and regular joins), ``asof.py`` (as-of joins).
- Keys become dense ids shared by both sides (``keys.py``); rows wait as Arrow in row state
  (``store.py`` over ``heliosdb.state.rows``, memory or RocksDB); build and probe run in
  Cython (``kernels/_join.pyx``).

How the planner uses it: build the spec with the user's window spec as ``window=`` (the
operator calls its ``windower()``), call ``make_join(spec, left_schema, right_schema, name=,
max_state_bytes=, backend=)``, route each input's batches to ``process_side(0 | 1, batch)``,
send ``on_watermark(min of both sides' watermarks)``, and ``close()`` once both inputs ended.
Late rows come out as ``SideOutput("late_left" | "late_right", rows)``.  With parallelism,
both inputs are hash-exchanged on their key columns and a restore selects a subtask's rows
with a selector on the **left** key names (both sides' snapshot tables carry them).
"""
from __future__ import annotations

from typing import Callable, Optional

import pyarrow as pa

from ..windower import SessionWindower
from .asof import AsofJoin
from .base import LATE_TAGS, JoinOperator
from .session import SessionWindowJoin
from .spec import JoinSpec, output_schema
from .symmetric import SymmetricJoin
from .window import PaneWindowJoin

__all__ = ["JoinSpec", "JoinOperator", "LATE_TAGS", "make_join", "output_schema"]


def make_join(spec: JoinSpec, left_schema: pa.Schema, right_schema: pa.Schema, name: str = "join",
              max_state_bytes: Optional[int] = None, backend=None,
              now: Optional[Callable[[], int]] = None) -> JoinOperator:
    """The join operator of ``spec`` over inputs of ``left_schema`` and ``right_schema``.

    Parameters
    ----------
    name
        The step's name (in errors, metrics and the RocksDB folder).
    max_state_bytes
        The state backend's bound (None: unbounded); going over it stops the job with an
        error that says how to get under it.
    backend
        A ``config.StateBackend``: ``rocksdb`` keeps the waiting rows on disk (only their
        index stays in memory); None or ``memory``: in memory.
    now
        Regular joins without event time: the wall clock (ns) their TTL runs on.

    Examples
    --------
    >>> import pyarrow as pa, heliosdb as hdb
    >>> schema = pa.schema([("ts", pa.int64()), ("k", pa.string()), ("v", pa.int64())])
    >>> spec = JoinSpec("window", "k", "k", coalesce_keys=True, window=hdb.TumblingWindow.of(10),
    ...                 left_time="ts", right_time="ts")
    >>> op = make_join(spec, schema, schema, name="j")
    >>> op.inputs, op.stateful, op.parallel_kind
    (2, True, 'by_key')
    >>> op.process_side(0, pa.record_batch({"ts": [1_000, 2_000], "k": ["a", "b"], "v": [1, 2]}))
    []
    >>> op.process_side(1, pa.record_batch({"ts": [3_000, 4_000], "k": ["a", "a"], "v": [10, 20]}))
    []
    >>> out = op.on_watermark(10_000_000_000)
    >>> out[0].select(["k", "v", "v_right"]).to_pydict(), out[-1]
    ({'k': ['a', 'a'], 'v': [1, 1], 'v_right': [10, 20]}, Watermark(t=10000000000))
    >>> op.state_size_bytes()
    0
    """
    args = (spec, left_schema, right_schema, name, max_state_bytes, backend)
    if spec.kind == "window":
        if isinstance(spec.windower(), SessionWindower):
            return SessionWindowJoin(*args)
        return PaneWindowJoin(*args)
    if spec.kind == "asof":
        return AsofJoin(*args)
    if now is not None:
        return SymmetricJoin(*args, now=now)
    return SymmetricJoin(*args)
