"""The join methods of a ``Stream``: ``join`` and ``join_asof`` (:class:`~heliosdb.stream.Stream`
inherits them).

Keys follow Polars: ``on=`` for key columns named alike on both sides (kept once in the
output), ``left_on=``/``right_on=`` otherwise, a list for several.  The output is the left
columns, then the right ones, a right column whose name is taken getting ``suffix``; a window
join puts ``window_start``, ``window_end`` first.  A null key never matches.  The kind of join
follows from the arguments: ``window=`` a window join, ``between=`` an interval join, neither
a regular join (state kept for ``ttl``), ``join_asof`` an as-of join; a lookup table
(``hdb.table(...)``) instead of a stream makes a lookup join.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, TypeVar, Union

from .config import Duration, to_nanos
from .errors import PlanError
from .expr import parse_projection
from .connectors.table import TableSpec
from .logical import Join, LookupJoin, Node, Select, join_keys
from .windows import WINDOW_SPECS, WindowSpec

S = TypeVar("S", bound="JoinMethods")
Keys = Union[str, Sequence[str], None]


class JoinMethods:
    """Mixed into :class:`~heliosdb.stream.Stream`: ``_env`` and ``_node`` are the stream's."""

    _env: Any
    _node: Node

    def join(self: S, other: Any, on: Keys = None, left_on: Keys = None, right_on: Keys = None,
             how: str = "inner", suffix: str = "_right", window: Optional[WindowSpec] = None,
             between: Optional[Tuple[Duration, Duration]] = None,
             ttl: Optional[Duration] = None) -> S:
        """Join with another stream (or a lookup table) on equal keys.

        Parameters
        ----------
        other
            The right input: a stream of the same environment, or a lookup table
            (``hdb.table(...)``).
        on, left_on, right_on
            The keys: ``on=`` when both sides name them alike (they appear once in the
            output), else ``left_on=`` and ``right_on=``, as many on each side; a list for
            several columns.  Keys of comparable types (``int32`` and ``int64``, ``string`` and
            ``large_string``) are compared as one type; a null key never matches.
        how
            ``"inner"``, ``"left"``, ``"right"`` or ``"full"``: whether the rows of one side
            that met no row of the other are kept (padded with nulls), once their window or
            interval has passed the watermark.
        suffix
            Added to a right column whose name the output already has.
        window
            A window join: ``TumblingWindow.of(...)``, ``SlidingWindow.of(...)`` or
            ``SessionWindow.with_gap(...)``; rows of both sides with equal keys in the same
            window meet, and the output starts with ``window_start`` and ``window_end``.
        between
            An interval join: ``(lower, upper)`` durations (``timedelta`` or seconds); a right
            row meets a left row when its event time lies in ``[left + lower, left + upper]``.
        ttl
            A regular join (neither ``window`` nor ``between``): every pair of rows with equal
            keys meets once, as soon as the second arrives, and rows are kept for ``ttl``
            (default ``StreamingConfig(state=StateConfig(ttl=))``; needed when both inputs
            are unbounded).

        Window and interval joins need event time on both sides (``with_watermark``); the
        join's watermark is the minimum of the two, and rows it finds late go to
        ``late_output("left")`` / ``late_output("right")``.  With ``set_parallelism(n)`` both
        inputs are partitioned by the hash of their keys to ``n`` subtasks; the result is
        the same as with one.

        Examples
        --------
        >>> import heliosdb as hdb
        >>> from datetime import timedelta
        >>> env = hdb.StreamEnvironment()
        >>> bids = env.from_iterable([{"ts": 1000, "auction": 1, "price": 5.0},
        ...                           {"ts": 2000, "auction": 2, "price": 7.0}]).with_watermark("ts")
        >>> auctions = env.from_iterable([{"ts": 500, "id": 1, "seller": "ann"},
        ...                               {"ts": 1500, "id": 2, "seller": "bob"}]).with_watermark("ts")

        A window join: rows with equal keys in the same 10 s window.

        >>> j = bids.join(auctions, left_on="auction", right_on="id", window=hdb.TumblingWindow.of(10))
        >>> j.schema.names
        ['window_start', 'window_end', 'ts', 'auction', 'price', 'ts_right', 'id', 'seller']
        >>> j.collect().sort_by("ts").select(["auction", "price", "seller"]).to_pydict()
        {'auction': [1, 2], 'price': [5.0, 7.0], 'seller': ['ann', 'bob']}

        An interval join: auctions opened at most 0.6 s before the bid.

        >>> iv = bids.join(auctions, left_on="auction", right_on="id",
        ...                between=(timedelta(milliseconds=-600), timedelta(0)), how="left")
        >>> iv.collect().sort_by("ts").select(["ts", "seller"]).to_pydict()
        {'ts': [1000, 2000], 'seller': ['ann', 'bob']}

        A regular join of bounded inputs (keys named alike appear once):

        >>> left = env.from_iterable([{"k": 1, "a": "x"}, {"k": 2, "a": "y"}])
        >>> right = env.from_iterable([{"k": 2, "b": 20}, {"k": 3, "b": 30}])
        >>> left.join(right, on="k", how="full").collect().sort_by("k").to_pydict()
        {'k': [1, 2, 3], 'a': ['x', 'y', None], 'b': [None, 20, 30]}
        >>> left.join(right, on="nope")
        Traceback (most recent call last):
        ...
        heliosdb.errors.PlanError: step 'join-...': join key 'nope' is not a column of the left input; ...
        """
        if isinstance(other, TableSpec):
            extra = [n for n, v in (("window", window), ("between", between), ("ttl", ttl)) if v is not None]
            if extra:
                raise PlanError(f"a lookup join takes no {'/'.join(e + '=' for e in extra)}; those apply to "
                                "a join of two streams")
            return self._join_table(other, on=on, left_on=left_on, right_on=right_on, how=how, suffix=suffix)
        if not isinstance(other, JoinMethods):
            raise PlanError(f"join() takes a stream of the same environment or a lookup table (hdb.table(...)), "
                            f"got {type(other).__name__}")
        lk, rk = join_keys(on, left_on, right_on)
        alike = on is not None
        if window is not None and between is not None:
            raise PlanError("join() takes window= (a window join) or between= (an interval join), not both")
        if window is not None:
            if not isinstance(window, WINDOW_SPECS):
                raise PlanError("join(window=) takes a window spec such as TumblingWindow.of(timedelta(seconds=10)), "
                                f"SlidingWindow.of(size, slide) or SessionWindow.with_gap(gap); got {window!r}")
            if ttl is not None:
                raise PlanError("a window join keeps its state until its windows close; ttl= applies to a "
                                "regular join (neither window= nor between=)")
            step = Join("window", lk, rk, how, suffix, window=window, coalesce_keys=alike)
        elif between is not None:
            if not isinstance(between, (tuple, list)) or len(between) != 2:
                raise PlanError(f"join(between=) takes (lower, upper) durations, got {between!r}")
            if ttl is not None:
                raise PlanError("an interval join keeps a row until the watermark passes its interval; ttl= "
                                "applies to a regular join (neither window= nor between=)")
            lo, hi = (to_nanos(b, "join(between=)") for b in between)
            if lo > hi:
                raise PlanError(f"join(between=(lower, upper)) needs lower <= upper, got {between!r}")
            step = Join("interval", lk, rk, how, suffix, between=(lo, hi), coalesce_keys=alike)
        else:
            ttl_ns = None if ttl is None else to_nanos(ttl, "join(ttl=)")
            bounded = (_bounded(self._node), _bounded(other._node))
            if ttl_ns is None and self._env.config.state.ttl_ns is None and not all(bounded):
                # Without a TTL a row waits for ever: the rows of an unbounded input pile up, even
                # when the other input has ended (an outer join emits them only at the end).
                what = ("of two unbounded streams keeps every row of both" if not any(bounded) else
                        f"of an unbounded stream ({'left' if bounded[1] else 'right'}) with a bounded one keeps "
                        "every row of the unbounded one for ever (the bounded one ending does not end it)")
                extra = "" if not any(bounded) else \
                    "; to enrich a stream with a bounded table, use a lookup join: join(hdb.table(...))"
                raise PlanError(
                    f"a regular join {what}: give join(ttl=timedelta(...)) (how long a row waits for its match), "
                    f"or StreamingConfig(state=StateConfig(ttl=)); window= and between= bound it by event time{extra}")
            step = Join("regular", lk, rk, how, suffix, ttl_ns=ttl_ns, coalesce_keys=alike)
        return self._joined(other, step)

    def join_asof(self: S, other: Any, on: Keys = None, left_on: Keys = None, right_on: Keys = None,
                  tolerance: Optional[Duration] = None, suffix: str = "_right") -> S:
        """Each left row with the latest right row of the same key at or before its event time.

        Both sides need event time (``with_watermark``); the keys (``on=``, or ``left_on=``
        and ``right_on=``) say which rows may match, as Polars' ``by=`` does (event time
        plays the part of Polars' ``on=``).  Every left row is kept (Polars' ``join_asof``):
        the right columns are null when no right row is at or before it, or none within
        ``tolerance`` (a duration).  A left row is answered once the right side's watermark
        has passed its time, so the answer does not depend on arrival order.

        Examples
        --------
        >>> import heliosdb as hdb
        >>> env = hdb.StreamEnvironment()
        >>> orders = env.from_iterable([{"ts": 1000, "currency": "EUR", "amount": 3.0},
        ...                             {"ts": 3000, "currency": "EUR", "amount": 4.0},
        ...                             {"ts": 3000, "currency": "USD", "amount": 5.0}]).with_watermark("ts")
        >>> rates = env.from_iterable([{"ts": 900, "currency": "EUR", "rate": 1.1},
        ...                            {"ts": 2000, "currency": "EUR", "rate": 1.2}]).with_watermark("ts")
        >>> out = orders.join_asof(rates, on="currency").collect()
        >>> out.schema.names
        ['ts', 'currency', 'amount', 'ts_right', 'rate']
        >>> out.sort_by([("ts", "ascending"), ("currency", "ascending")]).select(["currency", "rate"]).to_pydict()
        {'currency': ['EUR', 'EUR', 'USD'], 'rate': [1.1, 1.2, None]}
        """
        if not isinstance(other, JoinMethods):
            raise PlanError(f"join_asof() takes a stream of the same environment, got {other!r}")
        lk, rk = join_keys(on, left_on, right_on)
        alike = on is not None
        tol = None if tolerance is None else to_nanos(tolerance, "join_asof(tolerance=)")
        return self._joined(other, Join("asof", lk, rk, "left", suffix, tolerance_ns=tol, coalesce_keys=alike))

    def _joined(self: S, other: Any, step: Join) -> S:
        """The stream of join ``step`` of this stream (left) and ``other`` (right), typed now
        so a wrong key or a missing event time is reported here."""
        from .planner.schema import output_schema

        if other._env is not self._env:
            raise PlanError("join(): both streams must come from the same StreamEnvironment (a job runs "
                            "one environment's pipelines)")
        right = other._node
        if right is self._node:
            # A self-join: the right input is a branch of its own, so each side has its stage.
            names = output_schema(right).names
            right = Node(Select(tuple(parse_projection(names, "join"))), right, self._env._next_name("select"))
        node = Node(step, self._node, self._env._next_name(step.kind), right=right)
        output_schema(node)
        return type(self)(self._env, node)  # type: ignore[call-arg]

    def _join_table(self: S, table: TableSpec, on: Keys = None, left_on: Keys = None, right_on: Keys = None,
                    how: str = "inner", suffix: str = "_right") -> S:
        """A lookup join with ``table`` (``hdb.table(...)``), what :meth:`join` does when given
        one: each row with every table row whose key columns equal its own, as SQL's join (a
        key that occurs twice in the table gives two output rows; a null key matches nothing).
        ``how="left"`` keeps the rows without a match, with nulls for the table's columns.
        Output: the stream's columns, then the table's other columns (a name the stream has
        gets ``suffix``).

        >>> import heliosdb as hdb, pyarrow as pa
        >>> users = hdb.table(pa.table({"id": [1, 1, 2], "name": ["ann", "al", "bob"]}))
        >>> s = hdb.StreamEnvironment().from_iterable([{"id": 1}, {"id": 3}])
        >>> s.join(users, on="id", how="left").collect().to_pydict()
        {'id': [1, 1, 3], 'name': ['ann', 'al', None]}
        """
        lk, rk = join_keys(on, left_on, right_on)
        step = LookupJoin(table, lk, rk, how, suffix)
        return type(self)(self._env, Node(step, self._node, self._env._next_name(step.kind)))  # type: ignore[call-arg]


def _bounded(node: Node) -> bool:
    """Whether every source ``node`` reads ends by itself."""
    return all(n.step.source.bounded for n in node.sources())


__all__: List[str] = ["JoinMethods"]
