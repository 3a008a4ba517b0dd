"""The lookup join: each batch of a stream joined with a table held in a compiled index.

The table (``hdb.table(...)``, a ``connectors.table.TableSpec``: anything with the
:class:`TableLoader` protocol) is read once when the job opens, and its key columns built into a
``kernels._lookup.JoinIndex`` (key tuple -> dense id -> the rows with that key).  A batch's key
columns become int64 codes in the same code space (integers as themselves, strings as ids of the
table's ``StringIndex``: a string the table lacks cannot match), the index gives the (stream
row, table row) pairs, and the output is the stream's columns taken at the left rows and the
table's at the right rows (Arrow ``take``).  No Python runs per row.

:func:`join_columns` types a join (the planner's schema pass): Polars' conventions, SQL null
semantics.  :class:`SharedTable` is the one index of a job's join step, shared by its replicas;
with ``refresh`` a background thread reads the table again every interval, builds a new index
and swaps it in between batches (a failed read keeps the version in use).  Nothing of the
table is in a checkpoint: a restored job reads it again.
"""
from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import List, Optional, Protocol, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..aggregates.codecs import int64_codes, string_buffers
from ..errors import PlanError, SchemaError
from ..kernels._lookup import JoinIndex, StringIndex
from .base import Item, Operator, OperatorContext

log = logging.getLogger("heliosdb.lookup")

#: What ``how=`` a lookup join takes.
LOOKUP_HOWS = ("inner", "left")


class TableLoader(Protocol):
    """What the join reads of its table spec (``connectors.table.TableSpec``)."""

    schema: pa.Schema
    #: Read the table again every this many ns (None: once).
    refresh_ns: Optional[int]

    def read(self, columns: Sequence[str]) -> pa.Table:
        """The table's current version, with ``columns`` of ``schema``'s types."""

    def describe(self) -> str:
        """The table for explain() and logs."""


# -- typing -----------------------------------------------------------------------------------------
def _key_class(t: pa.DataType) -> Optional[str]:
    """What a key type matches by value: integers with integers, strings with strings, floats
    with floats, timestamps with timestamps of their unit; a boolean, date, time or duration
    only with its own type."""
    if pat.is_boolean(t):
        return "bool"
    if pat.is_integer(t):
        return "int"
    if pat.is_floating(t):
        return "float"
    if pat.is_string(t) or pat.is_large_string(t):
        return "str"
    if pat.is_timestamp(t):
        return f"time:timestamp[{t.unit}]"         # any time zone: the values are UTC instants
    if pat.is_date(t) or pat.is_time(t) or pat.is_duration(t):
        return f"time:{t}"
    return None


@dataclass(frozen=True)
class JoinColumns:
    """A lookup join's columns: the stream's key columns ``left_on`` and the table's
    ``right_on`` (pairwise), ``kinds`` (what each pair is matched as), the table's other
    columns ``right`` with their output names ``right_names``, and the ``output`` schema:
    the stream's columns, then those."""

    left_on: Tuple[str, ...]
    right_on: Tuple[str, ...]
    kinds: Tuple[str, ...]
    right: Tuple[str, ...]
    right_names: Tuple[str, ...]
    output: pa.Schema

    def pruned(self, needed: Optional[set]) -> Tuple[List[str], List[int]]:
        """(stream columns to output, positions in ``right`` to output) for a later step
        that reads ``needed`` columns (None: all)."""
        left = [n for n in self.output.names[: len(self.output) - len(self.right)]
                if needed is None or n in needed]
        right = [i for i, n in enumerate(self.right_names) if needed is None or n in needed]
        return left, right


def join_columns(left: pa.Schema, right: pa.Schema, left_on: Sequence[str], right_on: Sequence[str],
                 suffix: str, step: str) -> JoinColumns:
    """Type a lookup join of a stream with schema ``left`` and a table with schema ``right``.

    Key columns are kept once (the stream's); the table's other columns follow the stream's,
    a name the stream has getting ``suffix``.  Key pairs must be comparable: integers of any
    width and sign with each other, strings (``string``/``large_string``), floats, or equal
    types; anything else is a PlanError naming both columns.

    Examples
    --------
    >>> s = pa.schema([("user", pa.int32()), ("v", pa.float64())])
    >>> t = pa.schema([("id", pa.int64()), ("v", pa.string()), ("name", pa.string())])
    >>> join_columns(s, t, ["user"], ["id"], "_right", "j").output.names
    ['user', 'v', 'v_right', 'name']
    >>> join_columns(s, t, ["user"], ["v"], "_right", "j")
    Traceback (most recent call last):
    ...
    heliosdb.errors.PlanError: step 'j': join key column 'user' of the stream (int32) cannot be compared with column 'v' of the table (string); cast one of them, e.g. with_columns(user=col('user').cast(...))
    """
    kinds = []
    for side, schema, names in (("stream", left, left_on), ("table", right, right_on)):
        for n in names:
            if schema.get_field_index(n) < 0:
                raise SchemaError(f"step {step!r}: join key column {n!r} is not in the {side}; it has "
                                  f"{schema.names}")
    for ln, rn in zip(left_on, right_on):
        lt, rt = left.field(ln).type, right.field(rn).type
        lk, rk = _key_class(lt), _key_class(rt)
        for n, t, k, side in ((ln, lt, lk, "stream"), (rn, rt, rk, "table")):
            if k is None:
                raise PlanError(f"step {step!r}: join key column {n!r} of the {side} has type {t}; keys "
                                "must be integers, strings, floats, booleans, dates or timestamps")
        if lk != rk:
            raise PlanError(
                f"step {step!r}: join key column {ln!r} of the stream ({lt}) cannot be compared with "
                f"column {rn!r} of the table ({rt}); cast one of them, e.g. "
                f"with_columns({ln}=col({ln!r}).cast(...))")
        signed = pat.is_signed_integer(lt) or pat.is_signed_integer(rt)
        kinds.append("uint64_vs_signed" if lk == "int" and signed and pa.uint64() in (lt, rt) else lk)
    rest = [f for f in right if f.name not in right_on]
    names, taken, own = [], set(left.names), {f.name for f in rest}
    for f in rest:
        name = f.name if f.name not in taken else f.name + suffix
        if name in taken or (name != f.name and name in own):
            # As Polars: a suffixed name never takes the name of another column of either side.
            raise PlanError(f"step {step!r}: the table's column {f.name!r} would be named {name!r}, "
                            f"which the {'stream' if name in left.names else 'table'} already has; pass another "
                            "suffix= or rename the column")
        taken.add(name)
        names.append(name)
    out = pa.schema(list(left) + [pa.field(n, f.type) for n, f in zip(names, rest)])
    return JoinColumns(tuple(left_on), tuple(right_on), tuple(kinds), tuple(f.name for f in rest),
                       tuple(names), out)


# -- key codes ---------------------------------------------------------------------------------------
def _valid_of(arr: pa.Array) -> Optional[np.ndarray]:
    """uint8 validity of ``arr`` (None: no nulls)."""
    if not arr.null_count:
        return None
    return arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8)


def _and(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[np.ndarray]:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _int_codes(arr: pa.Array, kind: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    codes, valid = int64_codes(arr), _valid_of(arr)
    if kind == "uint64_vs_signed" and arr.type == pa.uint64():
        # values past 2**63 - 1 equal no signed value (their int64 code would be negative)
        big = (codes >= 0).view(np.uint8)
        valid = big if valid is None else valid & big
    return codes, valid


@dataclass
class BuiltTable:
    """One version of the table: its index, the string ids of its string key columns, and
    the columns the output takes (``payload``, a RecordBatch)."""

    index: JoinIndex
    strings: List[Optional[StringIndex]]
    payload: pa.RecordBatch
    rows: int
    version: int = 1

    @property
    def nbytes(self) -> int:
        return (self.index.nbytes + sum(s.nbytes for s in self.strings if s is not None)
                + self.payload.nbytes)

    @classmethod
    def build(cls, table: pa.Table, cols: JoinColumns, payload: Sequence[int]) -> "BuiltTable":
        """Index ``table`` (its key columns ``cols.right_on``) and keep the payload columns."""
        table = table.combine_chunks()
        codes, strings = [], []
        valid: Optional[np.ndarray] = None
        for name, kind in zip(cols.right_on, cols.kinds):
            arr = table.column(name).chunk(0) if table.num_rows else pa.array([], table.schema.field(name).type)
            if kind == "str":
                offsets, data = string_buffers(arr)
                v = _valid_of(arr)
                sidx = StringIndex(offsets, data, v)
                strings.append(sidx)
                c = sidx.codes
            else:
                strings.append(None)
                c, v = _int_codes(arr, kind)
            codes.append(np.ascontiguousarray(c))
            valid = _and(valid, v)
        index = JoinIndex(codes, None if valid is None else np.ascontiguousarray(valid))
        names = [cols.right[i] for i in payload]
        arrays = [table.column(n).chunk(0) if table.num_rows else pa.array([], table.schema.field(n).type)
                  for n in names]
        batch = pa.RecordBatch.from_arrays(arrays, names=[cols.right_names[i] for i in payload])
        return cls(index, strings, batch, table.num_rows)

    def probe_codes(self, batch: pa.RecordBatch, cols: JoinColumns) -> Tuple[List[np.ndarray], Optional[np.ndarray]]:
        """A batch's key columns as codes of this version, and the rows that can match."""
        codes, valid = [], None
        for j, (name, kind) in enumerate(zip(cols.left_on, cols.kinds)):
            arr = batch.column(name)
            if kind == "str":
                offsets, data = string_buffers(arr)
                v = _valid_of(arr)
                v = np.ones(len(arr), np.uint8) if v is None else v.copy()
                c = np.empty(len(arr), np.int64)
                self.strings[j].lookup(offsets, data, c, v)
            else:
                c, v = _int_codes(arr, kind)
            codes.append(c)
            valid = _and(valid, v)
        return codes, None if valid is None else np.ascontiguousarray(valid)


# -- the one index of a join step -----------------------------------------------------------------
def _refresh_loop(ref: "weakref.ref[SharedTable]", stop: threading.Event, interval_s: float) -> None:
    """Reload the table every ``interval_s`` until stopped (or the table is gone)."""
    while not stop.wait(interval_s):
        shared = ref()
        if shared is None:
            return
        shared.reload()
        del shared


class SharedTable:
    """The table of one join step in one job: loaded by the first replica that opens, shared
    by all (one index, not a copy per replica), and with ``refresh`` reloaded in the
    background while any replica is open.  ``current`` is swapped as one reference, so a batch
    sees one version from start to end."""

    def __init__(self, loader: TableLoader, cols: JoinColumns, payload: Sequence[int], step: str):
        self.loader, self.cols, self.payload, self.step = loader, cols, list(payload), step
        self.columns = list(cols.right_on) + [cols.right[i] for i in self.payload]
        self.current: Optional[BuiltTable] = None
        self.refreshes = 0              # reloads swapped in
        self.refresh_failures = 0       # reloads that failed (the old version kept)
        self._failing = False
        self._users = 0
        self._lock = threading.Lock()
        self._stop: Optional[threading.Event] = None

    def _load(self) -> BuiltTable:
        return BuiltTable.build(self.loader.read(self.columns), self.cols, self.payload)

    def acquire(self, job: str) -> None:
        """A replica opens: load the table if no one has; start the refresh thread."""
        with self._lock:
            if self.current is None:
                self.current = self._load()
                log.info("step %r: lookup table version 1 in use: %s rows from %s", self.step,
                         f"{self.current.rows:,}", self.loader.describe(),
                         extra={"job": job, "operator": self.step, "rows": self.current.rows})
            self._users += 1
            interval = self.loader.refresh_ns
            if interval and self._stop is None:
                self._stop = threading.Event()
                threading.Thread(target=_refresh_loop, args=(weakref.ref(self), self._stop, interval / 1e9),
                                 name=f"{self.step}.refresh", daemon=True).start()

    def release(self) -> None:
        """A replica closed (or aborted): the last one stops the refresh thread."""
        with self._lock:
            self._users -= 1
            if self._users <= 0 and self._stop is not None:
                self._stop.set()
                self._stop = None

    def reload(self) -> None:
        """Read and index the table again and swap it in; a failure keeps the version in use
        (warned once until a reload succeeds again, and counted)."""
        try:
            built = self._load()
        except Exception as exc:  # noqa: BLE001 - any failed read keeps the old version
            self.refresh_failures += 1
            level = logging.DEBUG if self._failing else logging.WARNING
            self._failing = True
            log.log(level, "step %r: reloading the lookup table from %s failed (%s: %s); version %d "
                    "stays in use, and the next reload is tried in %.3g s (further failures are counted "
                    "in streaming_lookup_table_refresh_failures_total, not logged)", self.step,
                    self.loader.describe(), type(exc).__name__, exc, self.version,
                    self.loader.refresh_ns / 1e9, extra={"operator": self.step})
            return
        built.version = self.version + 1
        self.current = built
        self.refreshes += 1
        self._failing = False
        log.info("step %r: lookup table version %d in use: %s rows from %s", self.step, built.version,
                 f"{built.rows:,}", self.loader.describe(), extra={"operator": self.step, "rows": built.rows})

    @property
    def version(self) -> int:
        cur = self.current
        return 0 if cur is None else cur.version


# -- the operator -------------------------------------------------------------------------------------
class LookupJoinOperator(Operator):
    """Joins each batch with the table of its :class:`SharedTable`: ``how="inner"`` keeps the
    rows with a match (one output row per match), ``"left"`` every row (nulls for the table's
    columns where none matches).  Stateless: it runs as ordered replicas that share the table.

    Examples
    --------
    >>> class Table:                          # what hdb.table(...) gives
    ...     schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    ...     refresh_ns = None
    ...     def read(self, columns): return pa.table({"id": [1, 2], "name": ["a", "b"]}).select(columns)
    ...     def describe(self): return "doc table"
    >>> s = pa.schema([("user", pa.int64()), ("v", pa.float64())])
    >>> op = LookupJoinOperator("j", s, Table(), ["user"], ["id"], "left", "_right")
    >>> op.open(OperatorContext(job="doc"))
    >>> op.process_batch(pa.record_batch({"user": [2, 3], "v": [0.5, 1.5]}, schema=s))[0].to_pydict()
    {'user': [2, 3], 'v': [0.5, 1.5], 'name': ['b', None]}
    >>> op.close()
    []
    """

    kind = "lookup_join"
    parallel_kind = "replicas"

    def __init__(self, name: str, schema: pa.Schema, table: TableLoader, left_on: Sequence[str],
                 right_on: Sequence[str], how: str, suffix: str, needed: Optional[set] = None):
        if how not in LOOKUP_HOWS:
            raise PlanError(f"step {name!r}: a lookup join takes how='inner' or 'left', got {how!r}")
        self.name = name
        self.how = how
        self.cols = join_columns(schema, table.schema, left_on, right_on, suffix, name)
        self.left, payload = self.cols.pruned(needed)
        self.output_schema = pa.schema([self.cols.output.field(n) for n in self.left]
                                       + [self.cols.output.field(self.cols.right_names[i]) for i in payload])
        self.table = SharedTable(table, self.cols, payload, name)
        self.parallel = 1
        self._open = False

    def replica(self, index: int) -> "LookupJoinOperator":
        """Replica ``index``: the same table (one index for all), its own name."""
        op = LookupJoinOperator.__new__(LookupJoinOperator)
        op.__dict__.update(self.__dict__)
        op.name = f"{self.name}#{index}"
        op._open = False
        return op

    def open(self, ctx: OperatorContext) -> None:
        super().open(ctx)
        if not self._open:
            self.table.acquire(ctx.job)
            self._open = True

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        built = self.table.current          # one version for the whole batch
        if built is None:
            raise PlanError(f"step {self.name!r}: the lookup join was not opened (an engine bug)")
        if not batch.num_rows:
            return []
        codes, valid = built.probe_codes(batch, self.cols)
        left, right, unmatched = built.index.probe(codes, valid, self.how == "left")
        if not len(right):
            return []
        lcols = [batch.column(n) for n in self.left]
        if left is not None:
            idx = pa.array(left)
            lcols = [c.take(idx) for c in lcols]
        ridx = pa.array(right, mask=right < 0) if unmatched else pa.array(right)
        rcols = built.payload.take(ridx).columns if built.payload.num_columns else []
        return [pa.RecordBatch.from_arrays(lcols + list(rcols), schema=self.output_schema)]

    def close(self) -> List[Item]:
        self._release()
        return []

    def abort(self) -> None:
        self._release()

    def _release(self) -> None:
        if self._open:
            self._open = False
            self.table.release()

    # -- statistics ------------------------------------------------------------------------------
    def state_size_bytes(self) -> int:
        """Bytes of the table in use: its index and the columns the output takes."""
        cur = self.table.current
        return 0 if cur is None else cur.nbytes

    def table_stats(self) -> Optional[dict]:
        cur = self.table.current
        return {"rows": 0 if cur is None else cur.rows, "bytes": self.state_size_bytes(),
                "version": self.table.version, "refreshes": self.table.refreshes,
                "refresh_failures": self.table.refresh_failures}

    def describe(self) -> str:
        keys = ", ".join(a if a == b else f"{a}={b}" for a, b in zip(self.cols.left_on, self.cols.right_on))
        more = f" x{self.parallel}" if self.parallel > 1 else ""
        return f"lookup join[{self.name}] ({self.how} on {keys}; {self.table.loader.describe()}){more}"
