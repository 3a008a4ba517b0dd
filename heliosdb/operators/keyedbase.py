"""What every keyed aggregation shares: windows (``operators/keyedwindow.py`` and the
operators built on it), running aggregates (``operators/keyed.py``) and the replicas of a
two-phase window (``operators/preagg.py``).

A keyed operator encodes its key columns into int64 codes (``keys.KeyEncoder``), one tuple per
row, to which a hash table gives dense group ids; a key tuple gains a *null word* the first
time a null key arrives (the operator then widens its tables: ``_widen``).  Aggregate inputs
are prepared once per batch (``state.AccPlan``), rows are numbered in arrival order for
``first``/``last`` (``seq``), and the state is bounded by the memory backend.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pyarrow as pa

from ..errors import StateLimitError
from ..state import AccPlan
from .base import Item, Operator
from .keys import KeyEncoder

#: The aggregates of a step: (output name, aggregate spec) pairs, e.g. ``("n", hdb.count())``
#: (``heliosdb.aggregates.AggSpec``; operators take them as given and never import the API).
Aggs = List[Tuple[str, Any]]


class KeyedOperator(Operator):
    """Keys, aggregates and the arrival numbering of a keyed aggregation.

    Examples
    --------
    >>> import pyarrow as pa
    >>> import heliosdb as hdb
    >>> class Keys(KeyedOperator):
    ...     def _widen(self): pass
    >>> op = Keys("k", pa.schema([("k", pa.string()), ("v", pa.int64())]), ["k"], [("n", hdb.count())], 1 << 20)
    >>> codes = op._key_columns(pa.record_batch({"k": ["a", None], "v": [1, 2]}))
    >>> len(codes), op.nulls                        # one code column, then the null word
    (2, True)
    >>> [a.to_pylist() for a in op._decode_keys(np.stack(codes, axis=1))]
    [['a', None]]
    """

    stateful = True
    #: Parallel subtasks each own the keys of one hash partition.
    parallel_kind = "by_key"
    #: What the memory bound's error calls the state, and how to get under the bound.
    state_noun = "keyed state"
    memory_fix = "raise StateBackend.memory(max_size_bytes=)"

    def __init__(self, name: str, schema: pa.Schema, keys: List[str], aggs: Aggs,
                 max_state_bytes: int, backend=None):
        self.name = name
        self.input_schema = schema
        self.encoder = KeyEncoder(schema, keys, name)
        self.aggs = aggs
        self.acc = AccPlan(schema, aggs, name, backend)
        self.max_state_bytes = max_state_bytes
        self.width = self.encoder.width
        self.nulls = False                    # whether key tuples carry a null word
        self.seq = 0                          # arrival number of the next row (first/last)

    # -- keys ----------------------------------------------------------------------------------
    def _key_columns(self, batch: pa.RecordBatch) -> List[np.ndarray]:
        """Key codes of a batch (plus the null word once a null key has been seen)."""
        codes, nullword = self.encoder.encode(batch)
        if nullword is not None and not self.nulls:
            self._widen()
            self.nulls = True
        if self.nulls:
            codes = codes + [nullword if nullword is not None else np.zeros(batch.num_rows, np.int64)]
        return codes

    def _widen(self) -> None:
        """Key tuples gain a null word (the first null key arrived): widen the key tables."""
        raise NotImplementedError  # pragma: no cover - each operator widens its tables

    def _decode_keys(self, keys: np.ndarray) -> List[pa.Array]:
        w = self.width
        return self.encoder.decode(keys[:, :w], keys[:, w] if self.nulls else None)

    def _key_arrays(self, keys: np.ndarray) -> Dict[str, pa.Array]:
        return dict(zip(self.encoder.names, self._decode_keys(keys)))

    def _key_codes(self, table: pa.Table) -> List[np.ndarray]:
        """Key columns of a snapshot table -> this operator's key codes (widening for nulls)."""
        batch = pa.RecordBatch.from_arrays(
            [table.column(k).combine_chunks() for k in self.encoder.names], names=self.encoder.names)
        return self._key_columns(batch)

    # -- rows ----------------------------------------------------------------------------------
    def _seqs(self, n: int) -> Optional[np.ndarray]:
        """Arrival numbers of the next ``n`` rows (None when no aggregate needs them)."""
        base = self.seq
        self.seq += n
        return np.arange(base, base + n, dtype=np.int64) if self.acc.needs_seq else None

    def _in_pane_order(self, batch: pa.RecordBatch, bounds: List[int], pane_ns: int, clock: Any):
        """The rows of ``batch`` (cut at ``bounds``) numbered in arrival order, then put in pane
        order within each cut by ``clock.pane_runs``: ``(batch, runs, ts, key columns, prepared
        aggregate inputs)``, the batch and its inputs reordered alike."""
        seqs = self._seqs(batch.num_rows)
        runs, order, ts = clock.pane_runs(batch, bounds, pane_ns)
        if order is not None:
            batch = batch.take(pa.array(order))
            if seqs is not None:
                seqs = seqs[order]
        return batch, runs, ts, self._key_columns(batch), self.acc.prepare(batch, seqs)

    # -- state ---------------------------------------------------------------------------------
    def _state_summary(self) -> str:
        """What the state holds, for the memory bound's error (e.g. "12 keys")."""
        return ""

    def _check_memory(self) -> None:
        size = self.state_size_bytes()
        if size > self.max_state_bytes:
            raise StateLimitError(
                f"step {self.name!r}: {self.state_noun} is {size:,} bytes ({self._state_summary()}), "
                f"over the memory backend's bound of {self.max_state_bytes:,} bytes; "
                f"{self.memory_fix}", step=self.name
            )

    def close(self) -> List[Item]:
        self.acc.close_state()
        return []

    def abort(self) -> None:
        self.acc.close_state()

    def _describe_aggs(self) -> Tuple[str, str]:
        """(keys, aggregates) as ``describe()`` lists them."""
        return ", ".join(self.encoder.names), ", ".join(f"{n}={a!r}" for n, a in self.aggs)
