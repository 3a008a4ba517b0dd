"""The per-record Python operator: runs a ``map``/``filter``/``process`` function that could
not be compiled (or was asked not to be) on each record, and builds Arrow output batches.

Records are built column-wise from the batch (one ``to_pylist`` per column, one tuple per row),
the function is called once per record, and results become Arrow columns of the step's output
schema with Python's types (an int column refuses 1.5 instead of truncating it).  Any failure,
the function's own or a result that does not fit, raises a RecordError naming the step and the
record's position in this operator's input.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import pyarrow as pa

from ..pyfunc.record import BadValue, batch_row, record_error, record_type, rows, to_column
from .base import Item, Operator

_NOT_DICT = "map() must return a dict (the new record) or, for a one-column output, a single value"


class PythonFunctionOperator(Operator):
    """``map(fn)`` / ``filter(fn)`` / ``process(fn)`` run record by record in Python."""

    kind = "python"

    def __init__(self, mode: str, fn: Callable, name: str, input_schema: pa.Schema,
                 output_schema: pa.Schema, where: str, reason: Optional[str]):
        self.mode = mode
        self.fn = fn
        self.name = name
        self.output_schema = output_schema
        self.where = where
        self.reason = reason
        self._record = record_type(input_schema.names)
        self._names = output_schema.names
        self._keys = set(self._names)
        self._seen = 0

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        # Records are made one at a time and dropped after the call: a list of them all would
        # be a batch of live containers for the cyclic GC to scan over and over.
        make = self._record
        fn = self.fn
        out: list = []
        append = out.append
        try:
            for row in rows(batch):
                append(fn(make(row)))
        except Exception as exc:  # noqa: BLE001 - the user's function: reported with its record
            k = len(out)
            if k:   # an earlier record whose result does not fit fails first (as compiled)
                self._build(batch.slice(0, k), out)
            raise self._error(batch, k, exc, f"raised by {self.where}") from exc
        try:
            result = self._build(batch, out)
        finally:
            self._seen += batch.num_rows
        return [result] if result.num_rows else []

    def _build(self, batch: pa.RecordBatch, out: list) -> pa.RecordBatch:
        if self.mode == "filter":
            try:
                keep = list(map(bool, out))
            except Exception:  # noqa: BLE001 - e.g. a numpy array's ambiguous truth
                for i, v in enumerate(out):
                    try:
                        bool(v)
                    except Exception as exc:  # noqa: BLE001
                        raise self._error(batch, i, exc,
                                          f"the truth of what {self.where} returned") from exc
                raise
            return batch.filter(pa.array(keep, pa.bool_()))
        rows = list(range(len(out)))
        if self.mode == "process":
            rows = [i for i, v in enumerate(out) if v is not None]
            out = [out[i] for i in rows]
        return pa.RecordBatch.from_arrays(self._columns(batch, rows, out), schema=self.output_schema)

    def _columns(self, batch: pa.RecordBatch, rows: List[int], out: list) -> List[pa.Array]:
        if not out:
            return [pa.array([], f.type) for f in self.output_schema]
        keys = self._keys
        dict_form = isinstance(out[0], dict)
        if not dict_form and hasattr(out[0], "keys") and hasattr(out[0], "__getitem__"):
            dict_form = True            # a Record or another mapping
        if dict_form:
            for i, d in enumerate(out):
                if type(d) is dict and d.keys() == keys:
                    continue
                d = self._as_dict(batch, rows[i], d)
                out[i] = d
            columns = [[d[k] for d in out] for k in self._names]
        else:
            if len(self._names) != 1:
                self._fail_shape(batch, rows, out)
            for i, v in enumerate(out):
                if isinstance(v, dict) or v is None:
                    self._as_dict(batch, rows[i], v)   # raises: mixed or None
            columns = [out]
        arrays = []
        bad: Optional[Tuple[int, str, BaseException]] = None
        for name, values in zip(self._names, columns):
            try:
                arrays.append(to_column(values, self.output_schema.field(name).type, name))
            except BadValue as b:      # report the earliest record, whichever column
                if bad is None or rows[b.index] < bad[0]:
                    bad = (rows[b.index], name, b.error)
        if bad is not None:
            raise self._error(batch, bad[0], bad[2],
                              f"the value {self.where} returned for {bad[1]!r}")
        return arrays

    def _as_dict(self, batch: pa.RecordBatch, row: int, d: object) -> dict:
        """``d`` as a dict with exactly the output's keys, or raise naming the record."""
        if d is None:
            err: BaseException = TypeError(
                "map() function returned None; use process() to drop records")
        elif isinstance(d, dict) or (hasattr(d, "keys") and hasattr(d, "__getitem__")):
            d = d if isinstance(d, dict) else {k: d[k] for k in d.keys()}
            if d.keys() == self._keys:
                return d
            err = ValueError(f"returned a dict with keys {sorted(d)}, but the step's output "
                             f"columns are {self._names}")
        else:
            err = TypeError(f"{_NOT_DICT}; it returned a dict for one record and "
                            f"{type(d).__name__} for another")
        raise self._error(batch, row, err, f"returned by {self.where}")

    def _fail_shape(self, batch: pa.RecordBatch, rows: List[int], out: list) -> None:
        err = TypeError(f"{_NOT_DICT}; this step's output has columns {self._names} (from "
                        f"schema=), but it returned {type(out[0]).__name__}")
        raise self._error(batch, rows[0], err, f"returned by {self.where}")

    def _error(self, batch: pa.RecordBatch, i: int, exc: BaseException, detail: str):
        return record_error(self.name, self._seen + i, batch_row(batch, i), exc, detail)

    def describe(self) -> str:
        why = f"; not compiled: it {self.reason}" if self.reason else " (compile=False)"
        return f"python [{self.name}] {self.mode} per record{why}"
