"""The join spec (what the API asks for, validated once) and the output schema it gives.

A :class:`JoinSpec` is frozen and says everything a join operator needs besides its two input
schemas: the kind (window, interval, as-of, regular), the key columns of each side, ``how``
(inner, left, right, full), the suffix for clashing names, whether keys are kept once
(``on=``), each side's event-time column and the kind's own parameter (a window spec, the
interval's bounds, the as-of tolerance, the regular join's TTL).

How a window reaches the operator: the planner passes the user's window spec itself (a
``heliosdb.windows`` spec: ``TumblingWindow``, ``SlidingWindow``, ``SessionWindow``, ...) as
``window=``, exactly as a window aggregation gets it; the operator calls its ``windower()``
(one per operator instance: a session windower holds state) and never imports the API layer.

Output columns follow Polars: ``window_start``, ``window_end`` first (window joins), then the
left side's columns, then the right side's; with ``coalesce_keys`` the right key columns are
left out (the key is kept once, under the left name, in the type both sides' values fit:
in right and full joins it takes the right row's value where there is no left row); a right column whose name is taken gets
``suffix``.  Columns of a side that an outer join pads with nulls are nullable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import pyarrow as pa

from ...errors import ConfigError, SchemaError
from ..windower import PaneWindower, SessionWindower, Windower
from .keys import common_type

KINDS = ("window", "interval", "asof", "regular")
HOWS = ("inner", "left", "right", "full")
#: The type of ``window_start`` / ``window_end`` (as window aggregates give them).
WINDOW_TYPE = pa.timestamp("ns", tz="UTC")


def _names(value: Any, what: str) -> Tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    try:
        names = tuple(value)
    except TypeError:
        names = ()
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(f"join {what} must be a column name or a list of them, got {value!r}")
    return names


@dataclass(frozen=True)
class JoinSpec:
    """What a join step asks for (see the module docstring).

    Parameters
    ----------
    kind
        ``"window"``, ``"interval"``, ``"asof"`` or ``"regular"``.
    left_on, right_on
        Key columns of each side (a name or a list of names, as many on each side).
    how
        ``"inner"``, ``"left"``, ``"right"`` or ``"full"`` (as-of: ``"left"`` or ``"inner"``).
    suffix
        Added to a right column whose name the output already has.
    coalesce_keys
        The user gave ``on=``: the key columns are kept once.
    left_time, right_time
        Each side's event-time column (int64 epoch ms, or a timestamp); required except for
        regular joins (without them a regular join's TTL runs on processing time).
    window
        Window joins: the window spec (anything whose ``windower()`` gives a
        ``PaneWindower`` or a ``SessionWindower``; the ``heliosdb.windows`` specs do).
    between
        Interval joins: ``(lower_ns, upper_ns)``; a right row matches a left row when
        ``left.t + lower <= right.t <= left.t + upper``.
    tolerance_ns
        As-of joins: the right row may be at most this much older (None: any age).
    ttl_ns
        Regular joins: a row is kept this long after its time (None: for ever).

    Examples
    --------
    >>> JoinSpec("interval", "k", "k", between=(-5, 5), left_time="ts", right_time="ts").left_on
    ('k',)
    >>> JoinSpec("asof", ("k",), ("k",), how="full", left_time="ts", right_time="ts")
    Traceback (most recent call last):
    ...
    heliosdb.errors.ConfigError: an as-of join keeps every left row (how='left') or only the matched ones (how='inner'); how='full' is not one of them
    """

    kind: str
    left_on: Tuple[str, ...]
    right_on: Tuple[str, ...]
    how: str = "inner"
    suffix: str = "_right"
    coalesce_keys: bool = False
    left_time: Optional[str] = None
    right_time: Optional[str] = None
    window: Any = None
    between: Optional[Tuple[int, int]] = None
    tolerance_ns: Optional[int] = None
    ttl_ns: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"join kind must be one of {KINDS}, got {self.kind!r}")
        object.__setattr__(self, "left_on", _names(self.left_on, "left_on"))
        object.__setattr__(self, "right_on", _names(self.right_on, "right_on"))
        if len(self.left_on) != len(self.right_on):
            raise ConfigError(
                f"join left_on {list(self.left_on)} and right_on {list(self.right_on)} must name as many "
                "columns (they are compared pairwise)")
        if self.how not in HOWS:
            raise ConfigError(f"join how must be one of {HOWS}, got {self.how!r}")
        if not isinstance(self.suffix, str) or not self.suffix:
            raise ConfigError(f"join suffix must be a non-empty string, got {self.suffix!r}")
        times = (self.left_time, self.right_time)
        if self.kind != "regular" and None in times:
            raise ConfigError(
                f"{'an' if self.kind in ('interval', 'asof') else 'a'} {self.kind} join needs the event-time "
                "column of both sides (left_time=, right_time=), "
                f"got {times}; give each input a with_watermark(time=...)")
        if self.kind == "regular" and (times[0] is None) != (times[1] is None):
            raise ConfigError(f"a regular join takes an event-time column on both sides or on neither, got {times}")
        getattr(self, f"_check_{self.kind}")()

    def _check_window(self) -> None:
        if self.window is None:
            raise ConfigError("a window join needs window= (e.g. TumblingWindow.of(timedelta(seconds=10)))")
        self.windower()

    def _check_interval(self) -> None:
        b = self.between
        if (not isinstance(b, tuple) or len(b) != 2 or not all(isinstance(x, int) for x in b)
                or b[0] > b[1]):
            raise ConfigError(f"an interval join needs between=(lower_ns, upper_ns) with lower <= upper, got {b!r}")

    def _check_asof(self) -> None:
        if self.how not in ("left", "inner"):
            raise ConfigError("an as-of join keeps every left row (how='left') or only the matched ones "
                              f"(how='inner'); how={self.how!r} is not one of them")
        t = self.tolerance_ns
        if t is not None and (not isinstance(t, int) or t < 0):
            raise ConfigError(f"as-of join tolerance must be None or >= 0 ns, got {t!r}")

    def _check_regular(self) -> None:
        t = self.ttl_ns
        if t is not None and (not isinstance(t, int) or t <= 0):
            raise ConfigError(f"regular join ttl must be None (state kept for ever) or > 0 ns, got {t!r}")

    def windower(self) -> Windower:
        """A new windower of the window join's spec (one per operator instance)."""
        try:
            w = self.window.windower()
        except AttributeError:
            w = None
        if not isinstance(w, (PaneWindower, SessionWindower)):
            raise ConfigError(
                f"join window= must be a window spec such as TumblingWindow.of(...), SlidingWindow.of(...) or "
                f"SessionWindow.with_gap(...); got {self.window!r}")
        return w

    @property
    def outer_left(self) -> bool:
        """Whether left rows without a partner are emitted (padded with nulls)."""
        return self.how in ("left", "full")

    @property
    def outer_right(self) -> bool:
        """Whether right rows without a partner are emitted (padded with nulls)."""
        return self.how in ("right", "full")

    def describe(self) -> str:
        keys = ", ".join(self.left_on) if self.left_on == self.right_on else \
            f"{list(self.left_on)} = {list(self.right_on)}"
        def s(ns: Optional[int]) -> str:
            return "none" if ns is None else f"{ns / 1e9:g}s"

        def off(ns: int) -> str:
            return f"left {'-' if ns < 0 else '+'} {s(abs(ns))}"

        extra = {"window": lambda: repr(self.window),
                 "interval": lambda: f"right time in [{off(self.between[0])}, {off(self.between[1])}]",
                 "asof": lambda: f"tolerance {s(self.tolerance_ns)}",
                 "regular": lambda: f"ttl {s(self.ttl_ns)}" + ("" if self.left_time else " (processing time)")}
        return f"{self.kind} join {self.how} on {keys}, {extra[self.kind]()}"


@dataclass(frozen=True)
class OutputColumn:
    """Where output column ``name`` comes from: ``side`` 0 (left) or 1 (right) and the column
    index there; ``coalesce`` (a right column index) when the key is kept once and the right
    row gives its value where the left row is missing."""

    name: str
    field: pa.Field
    side: int
    index: int
    coalesce: Optional[int] = None


def output_columns(left: pa.Schema, right: pa.Schema, spec: JoinSpec) -> List[OutputColumn]:
    """The output's side columns, in order (see :func:`output_schema`)."""
    for schema, keys, what in ((left, spec.left_on, "left_on"), (right, spec.right_on, "right_on")):
        for k in keys:
            if schema.get_field_index(k) < 0:
                raise SchemaError(f"join {what} column {k!r} is not in that input; it has {schema.names}")
    pad_left = spec.outer_right
    pad_right = spec.outer_left or spec.kind == "asof"
    taken = {"window_start", "window_end"} if spec.kind == "window" else set()
    cols: List[OutputColumn] = []
    right_key = dict(zip(spec.left_on, spec.right_on))
    for i, f in enumerate(left):
        if f.name in taken:
            raise SchemaError(f"the left input's column {f.name!r} clashes with the window join's own "
                              "window_start/window_end; rename it first")
        co = None
        nullable = f.nullable or pad_left
        if spec.coalesce_keys and f.name in right_key:
            co = right.get_field_index(right_key[f.name])
            nullable = f.nullable or (pad_left and right.field(co).nullable)
            f = f.with_type(common_type(f.type, right.field(co).type))
        cols.append(OutputColumn(f.name, f.with_nullable(nullable), 0, i, co))
        taken.add(f.name)
    skip = set(spec.right_on) if spec.coalesce_keys else set()
    kept = {f.name for f in right if f.name not in skip}
    for i, f in enumerate(right):
        if f.name in skip:
            continue
        name = f.name if f.name not in taken else f.name + spec.suffix
        if name in taken or (name != f.name and name in kept):
            # As Polars: a suffixed name never takes the name of another column of either input.
            raise SchemaError(
                f"the right input's column {f.name!r} clashes with the output column {name!r} even with "
                f"suffix {spec.suffix!r} (the {'left' if name in left.names else 'right'} input has a column "
                f"{name!r}); rename one of them or pass another suffix=")
        cols.append(OutputColumn(name, pa.field(name, f.type, f.nullable or pad_right, f.metadata), 1, i))
        taken.add(name)
    return cols


def output_schema(left_schema: pa.Schema, right_schema: pa.Schema, spec: JoinSpec) -> pa.Schema:
    """The schema of a join's output rows (see the module docstring).

    Examples
    --------
    >>> import pyarrow as pa
    >>> left = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("v", pa.float64())])
    >>> right = pa.schema([("ts", pa.int64()), ("k", pa.int64()), ("w", pa.string())])
    >>> spec = JoinSpec("interval", "k", "k", coalesce_keys=True, between=(0, 10), left_time="ts", right_time="ts")
    >>> output_schema(left, right, spec).names
    ['ts', 'k', 'v', 'ts_right', 'w']
    >>> import heliosdb as hdb
    >>> spec = JoinSpec("window", "k", "k", how="left", window=hdb.TumblingWindow.of(10),
    ...                 left_time="ts", right_time="ts")
    >>> s = output_schema(left, right, spec)
    >>> s.names, s.field("k_right").nullable, str(s.field("window_start").type)
    (['window_start', 'window_end', 'ts', 'k', 'v', 'ts_right', 'k_right', 'w'], True, 'timestamp[ns, tz=UTC]')
    """
    fields = [pa.field("window_start", WINDOW_TYPE, False), pa.field("window_end", WINDOW_TYPE, False)] \
        if spec.kind == "window" else []
    return pa.schema(fields + [c.field for c in output_columns(left_schema, right_schema, spec)])
