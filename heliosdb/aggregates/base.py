"""What an aggregate is: a spec (:class:`AggSpec`, what the user writes) and the state it
keeps per group (:class:`GroupsAccumulator`, arrays indexed by dense group id), as in
DataFusion's ``GroupsAccumulator``.

- ``AggSpec`` subclasses are frozen dataclasses that register themselves by ``kind``:
  ``AggSpec("sum", "v")`` and ``hdb.sum("v")`` both give ``Sum("v")``.  A spec types its
  output, builds its accumulator for an operator and reads its result from it.
- A ``GroupsAccumulator`` holds per-group arrays (``fields``: name -> (dtype, fill)) and,
  where it needs them, per-group value sets (:mod:`.valuesets`).  Its operations are
  vectorised over group ids: ``prepare`` a batch's inputs once, ``update`` groups from rows,
  ``merge`` another accumulator's groups in (panes, sessions, subtasks), ``state`` /
  ``restore`` as Arrow columns (checkpoints), ``evaluate``, ``nbytes``.  The generic parts
  (growing, copying, snapshot columns) are here; an accumulator writes the rest.
- Aggregates whose accumulators have the same ``key`` share one: ``count``, ``sum``, ``min``,
  ``max`` and ``mean`` of one column are folded by one kernel call per batch.
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Hashable, List, Optional, Tuple, Type

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import SchemaError
from .columns import grow, load_column
from .valuesets import ValueSet

Inputs = Tuple[Optional[np.ndarray], ...]

_REGISTRY: Dict[str, Type["AggSpec"]] = {}


def aggregate_class(kind: str) -> Type["AggSpec"]:
    """The registered aggregate class of ``kind``.

    >>> aggregate_class("sum").__name__
    'Sum'
    """
    cls = _REGISTRY.get(kind)
    if cls is None:
        raise SchemaError(f"unknown aggregate {kind!r}; use one of {tuple(_REGISTRY)}")
    return cls


def kinds() -> Tuple[str, ...]:
    """Every registered aggregate kind, in registration order.

    >>> "count" in kinds() and "quantile" in kinds()
    True
    """
    return tuple(_REGISTRY)


def unregister(kind: str) -> None:
    """Forget aggregate ``kind`` (tests, and notebooks that define one and start over)."""
    _REGISTRY.pop(kind, None)


class _ByKind(type):
    """``AggSpec(kind, column, ...)`` builds the aggregate class registered for ``kind``."""

    def __call__(cls, *args: Any, **kwargs: Any):
        if cls is AggSpec:
            if args:
                kind, args = args[0], args[1:]
            elif "kind" in kwargs:
                kind = kwargs.pop("kind")
            else:
                raise TypeError("AggSpec() needs the aggregate's kind, e.g. AggSpec('sum', 'v')")
            return aggregate_class(kind)(*args, **kwargs)
        return super().__call__(*args, **kwargs)


def column_type(schema: pa.Schema, column: str, step: str) -> pa.DataType:
    """The type of ``column``; raises SchemaError naming the step (and a close name) if the
    input has no such column.

    >>> column_type(pa.schema([("value", pa.int64())]), "valeu", "agg")
    Traceback (most recent call last):
    ...
    heliosdb.errors.SchemaError: step 'agg': unknown column 'valeu'; the input has columns ['value']; you probably meant 'value'
    """
    idx = schema.get_field_index(column)
    if idx < 0:
        import difflib

        close = difflib.get_close_matches(column, schema.names, n=1)
        hint = f"; you probably meant {close[0]!r}" if close else ""
        raise SchemaError(f"step {step!r}: unknown column {column!r}; the input has columns {schema.names}{hint}")
    return schema.field(idx).type


@dataclass(frozen=True, repr=False)
class AggSpec(metaclass=_ByKind):
    """One aggregate of a window or keyed aggregation: ``kind`` over ``column``.

    Every aggregate but ``count()`` (no column: rows) skips nulls and gives null for a group
    whose values are all null.  Build them with ``hdb.count()``, ``hdb.sum(col)``, ... or
    ``AggSpec(kind, column)``.  A subclass sets ``kind`` (it registers itself) and writes
    :meth:`output_type` and :meth:`accumulator`; see ``docs/aggregates.md``.

    Examples
    --------
    >>> AggSpec("sum", "v"), AggSpec("count")
    (sum('v'), count())
    >>> AggSpec("median", "v")
    Traceback (most recent call last):
    ...
    heliosdb.errors.SchemaError: unknown aggregate 'median'; use one of (...)
    """

    kind: ClassVar[str] = ""
    #: False: the column is optional (``count()``)
    needs_column: ClassVar[bool] = True
    column: Optional[str] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if not kind:
            return
        old = _REGISTRY.get(kind)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise TypeError(f"aggregate {kind!r} is defined twice: {old.__module__}.{old.__qualname__} "
                            f"and {cls.__module__}.{cls.__qualname__}; give one another kind")
        _REGISTRY[kind] = cls

    def __post_init__(self) -> None:
        if self.needs_column and not self.column:
            raise SchemaError(f"{self.kind}() needs a column name, e.g. hdb.{self.kind}('value')")

    # -- what a subclass writes ------------------------------------------------------------------
    def output_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        """The result type; raises SchemaError naming the step if the column does not fit."""
        raise NotImplementedError

    def accumulator(self, schema: pa.Schema, step: str) -> "GroupsAccumulator":
        """An empty accumulator for an operator over ``schema`` (its group states copy it)."""
        raise NotImplementedError

    def evaluate(self, acc: "GroupsAccumulator", sel: "Selection") -> pa.Array:
        """The result of groups ``sel`` from ``acc`` (the accumulator :meth:`accumulator`
        built, or the one it shares)."""
        return acc.evaluate(sel)

    # -- helpers -----------------------------------------------------------------------------------
    def input_type(self, schema: pa.Schema, step: str) -> pa.DataType:
        return column_type(schema, self.column, step)

    def numeric_input(self, schema: pa.Schema, step: str) -> pa.DataType:
        """The column's type, which must be an integer or a float."""
        t = self.input_type(schema, step)
        if not (pat.is_integer(t) or pat.is_floating(t)):
            raise SchemaError(
                f"step {step!r}: {self.kind}({self.column!r}) needs a numeric column, but "
                f"{self.column!r} is {t}; use count(), count_distinct(), first() or last() for "
                "non-numeric columns, or cast it"
            )
        return t

    def __repr__(self) -> str:
        return f"{self.kind}({self.column!r})" if self.column else f"{self.kind}()"


class Selection:
    """The groups a result or a snapshot reads: all ``n`` in id order (``ids`` None), or
    ``ids`` in that order.  Calling it on a per-group array gives their values: a copy
    (results must not change with the state), or with ``copy=False`` and every group, a
    view (the state is already a private copy).

    >>> Selection(3)(np.array([5, 6, 7, 8])), Selection(3, np.array([2, 0]))(np.array([5, 6, 7, 8]))
    (array([5, 6, 7]), array([7, 5]))
    """

    __slots__ = ("n", "ids", "copy", "_row_of")

    def __init__(self, n: int, ids: Optional[np.ndarray] = None, copy: bool = True):
        self.n, self.ids, self.copy = n, ids, copy
        self._row_of: Optional[np.ndarray] = None

    def __call__(self, a: np.ndarray) -> np.ndarray:
        if self.ids is None:
            return a[: self.n].copy() if self.copy else a[: self.n]
        return a[self.ids]

    @property
    def m(self) -> int:
        """How many groups are read (rows of the result)."""
        return self.n if self.ids is None else len(self.ids)

    def group_ids(self) -> np.ndarray:
        return np.arange(self.n, dtype=np.int64) if self.ids is None else np.asarray(self.ids, np.int64)

    def row_of(self) -> np.ndarray:
        """Group id -> its row in the result (-1: not read), for groups 0..n-1."""
        if self._row_of is None:
            if self.ids is None:
                self._row_of = np.arange(self.n, dtype=np.int64)
            else:
                r = np.full(self.n, -1, np.int64)
                r[self.ids] = np.arange(len(self.ids), dtype=np.int64)
                self._row_of = r
        return self._row_of


class GroupsAccumulator:
    """The state of one aggregate (or of several sharing it) for groups 0..capacity-1.

    A subclass calls ``super().__init__(key, prefix, fields, sets)`` and writes ``prepare``,
    ``update``, ``merge`` and ``evaluate`` (or result methods its aggregates call).
    ``fields`` are the per-group arrays, name -> (dtype, fill of an empty group); their
    snapshot columns are ``prefix + name``.  ``sets``: how many per-group value sets
    (:class:`~heliosdb.aggregates.valuesets.ValueSet`) it keeps, as ``self.sets``.
    The arrays are ``self.a[name]``; group states copy the accumulator an aggregate built
    (:meth:`empty`), so everything else set in ``__init__`` (column index, codec, kind) is
    shared configuration.

    Examples
    --------
    >>> acc = aggregate_class("sum")("v").accumulator(pa.schema([("v", pa.int64())]), "agg").empty(4)
    >>> acc.update(np.array([0, 1, 0]), acc.prepare(pa.record_batch({"v": [1, 2, 3]})), None)
    >>> acc.sum(Selection(2)).to_pylist(), sorted(acc.a)
    ([4, 2], ['max', 'min', 'nn', 'sum'])
    """

    #: snapshot column order: accumulators sort by it, then by first use
    order: ClassVar[int] = 100
    #: whether ``update`` reads arrival numbers (``seqs``)
    needs_seq: ClassVar[bool] = False

    def __init__(self, key: Hashable, prefix: str, fields: Dict[str, Tuple[Any, Any]], sets: int = 0):
        self.key = key
        self.prefix = prefix
        self.fields = {name: (np.dtype(dt), fill) for name, (dt, fill) in fields.items()}
        self.nsets = sets
        self.capacity = 0
        self.a: Dict[str, np.ndarray] = {name: np.empty(0, dt) for name, (dt, _) in self.fields.items()}
        self.sets: List[Any] = []

    # -- configuration -------------------------------------------------------------------------
    def combine(self, other: "GroupsAccumulator") -> "GroupsAccumulator":
        """Two aggregates asked for accumulators with the same key: the one that serves both."""
        return self

    @property
    def portable(self) -> bool:
        """Whether its state means the same in every operator instance (no per-instance
        string codes), so a replica's state can be taken as it is."""
        return True

    def frozen(self) -> "GroupsAccumulator":
        """This accumulator with configuration safe to read from another thread while this
        one goes on (codecs that decode with the values known now)."""
        return self

    def config_bytes(self) -> int:
        """Bytes of configuration shared by every group state (string tables)."""
        return 0

    # -- what a subclass writes ------------------------------------------------------------------
    def prepare(self, batch: pa.RecordBatch) -> Inputs:
        """This accumulator's inputs of a batch as numpy arrays, once per batch (all arrays
        one per row; ``update`` gets them, or a slice or selection of their rows)."""
        return ()

    def update(self, gids: np.ndarray, inputs: Inputs, seqs: Optional[np.ndarray]) -> None:
        """Fold row ``i`` of ``inputs`` into group ``gids[i]`` (capacity is there)."""
        raise NotImplementedError

    def merge(self, src: "GroupsAccumulator", src_ids: np.ndarray, dst_ids: np.ndarray) -> None:
        """Combine group ``src_ids[i]`` of ``src`` into group ``dst_ids[i]`` (``src`` may be
        ``self``; no id is both a source and a destination)."""
        raise NotImplementedError

    def merge_aligned(self, src: "GroupsAccumulator", m: int) -> None:
        """Combine ``src``'s groups 0..m-1 into the same groups of this one."""
        ids = np.arange(m, dtype=np.int64)
        self.merge(src, ids, ids)

    def evaluate(self, sel: Selection) -> pa.Array:
        raise NotImplementedError(f"{type(self).__name__} has result methods; its aggregates call them")

    def shift_seqs(self, base: int, n: int) -> None:
        """Arrival numbers of groups 0..n-1 move by ``base`` (a replica's state joins)."""

    # -- group storage (generic) ---------------------------------------------------------------------
    def empty(self, capacity: int) -> "GroupsAccumulator":
        """A new accumulator like this one, with ``capacity`` empty groups."""
        out = copy.copy(self)
        out.capacity = capacity
        out.a = {}
        for name, (dt, fill) in self.fields.items():
            out.a[name] = np.zeros(capacity, dt) if fill == 0 else np.full(capacity, fill, dt)
        out.sets = [ValueSet() for _ in range(self.nsets)]
        return out

    def resize(self, capacity: int) -> None:
        """Room for ``capacity`` groups (new ones empty)."""
        for name, (_, fill) in self.fields.items():
            self.a[name] = grow(self.a[name], capacity, fill)
        self.capacity = capacity

    def arrays(self) -> List[Tuple[str, np.ndarray]]:
        """(name, array) of every per-group array; names are unique in an operator."""
        return [(self.prefix + name, a) for name, a in self.a.items()]

    def holding(self, arrays: Dict[str, np.ndarray], sets: List[Any], capacity: int) -> "GroupsAccumulator":
        """This accumulator's configuration over other per-group arrays (by :meth:`arrays`
        name) and value sets."""
        out = copy.copy(self)
        out.a = {name: arrays[self.prefix + name] for name in self.fields}
        out.sets = sets
        out.capacity = capacity
        return out

    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.a.values()) + sum(s.nbytes() for s in self.sets)

    # -- snapshots -------------------------------------------------------------------------------
    def state(self, sel: Selection) -> Tuple[Dict[str, pa.Array], Dict[str, pa.Table]]:
        """Groups ``sel`` as Arrow columns (row i: the i-th group read) and tables of their
        value sets keyed by row number.  Values are stored decoded, never as this process's
        codes, so a snapshot restores into any instance, backend or parallelism."""
        return {self.prefix + name: pa.array(sel(a)) for name, a in self.a.items()}, {}

    def restore(self, table: pa.Table, extra: Dict[str, pa.Table], capacity: int, owned: bool) -> None:
        """Row i of ``table`` becomes group i (``capacity`` >= rows; ``owned``: the table's
        buffers are this call's alone, arrays may be kept as they are)."""
        for name, (dt, fill) in self.fields.items():
            self.a[name] = load_column(table, self.prefix + name, dt, fill, capacity, owned)
        self.capacity = len(next(iter(self.a.values()))) if self.a else capacity


def constructor_of(cls: Type[AggSpec]):
    """The user-facing function of an aggregate class: the function named like its kind in
    its module (``hdb.sum`` for ``Sum``), or None."""
    fn = getattr(sys.modules.get(cls.__module__), cls.kind, None)
    return fn if callable(fn) and not isinstance(fn, type) else None
