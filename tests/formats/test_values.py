"""formats.values.to_column: every (Python value, Arrow type) pair is kept exactly or named.

The oracle is tests/formats/exact_cases.py: plain Python arithmetic on what each type can hold.
"""
from __future__ import annotations

import datetime as dt

import msgpack
import pyarrow as pa
import pytest

from heliosdb.formats import WRONG_TYPE
from heliosdb.formats.json import JsonFormat
from heliosdb.formats.msgpack import MsgpackFormat
from heliosdb.formats.values import cast_exact, to_column

from .exact_cases import ERROR, TYPES, VALUES, case_id, cases, expected, held, same

CASES = cases()


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_to_column_keeps_the_value_or_names_it(case):
    v, t = case
    want = expected(v, t)
    column, bad = to_column([None, v, None], t)
    if want == ERROR:
        assert column is None and [i for i, _ in bad] == [1], (column, bad)
        assert repr(v)[:20] in bad[0][1]
    else:
        assert bad == [] and column.type == t
        assert same(held(column, 1), want), (held(column, 1), want)
        assert column.null_count == 2


def test_to_column_lists_every_bad_value_and_first_only_stops_at_the_first():
    values = [1, 2.5, 3, "x", 4.0, 2**70]
    column, bad = to_column(values, pa.int64())
    assert column is None and [i for i, _ in bad] == [1, 3, 5]
    assert to_column(values, pa.int64(), first_only=True)[1] == bad[:1]


def test_to_column_of_nested_values_checks_the_leaves():
    assert to_column([[1, 2.0]], pa.list_(pa.int64()))[0].to_pylist() == [[1, 2]]
    assert [i for i, _ in to_column([[1], [1, 2.5]], pa.list_(pa.int64()))[1]] == [1]
    st = pa.struct([("a", pa.int64()), ("t", pa.timestamp("ms"))])
    good = {"a": 1, "t": dt.datetime(2024, 1, 1, 0, 0, 0, 1000)}
    assert to_column([good], st)[0].to_pylist() == [good]
    assert [i for i, _ in to_column([good, {"a": 2.5}], st)[1]] == [1]
    assert [i for i, _ in to_column([{"a": 1, "t": dt.datetime(2024, 1, 1, 0, 0, 0, 5)}], st)[1]] == [0]


# -- formats that decode into a schema ------------------------------------------------------------
# MessagePack has no Decimal, date or naive datetime; its ints stop at -2**63.
MSGPACK_CASES = [(v, t) for v, t in CASES
                 if not (isinstance(v, dt.date) and getattr(v, "tzinfo", None) is None)
                 and type(v).__name__ != "Decimal"
                 and not (isinstance(v, int) and not isinstance(v, bool) and v < -(2**63))]


@pytest.mark.parametrize("case", MSGPACK_CASES, ids=[case_id(c) for c in MSGPACK_CASES])
def test_msgpack_decode_keeps_the_value_or_fails_the_message(case):
    v, t = case
    want = expected(v, t)
    fmt = MsgpackFormat(pa.schema([("x", t)]))
    decoded = fmt.decode([msgpack.packb({"x": None}), msgpack.packb({"x": v}, datetime=True),
                          msgpack.packb({})])
    if want == ERROR:
        assert [(f.index, f.reason, f.field) for f in decoded.failures] == [(1, WRONG_TYPE, "x")]
        assert decoded.message_index.tolist() == [0, 2]
    else:
        assert decoded.failures == []
        assert same(held(decoded.batch.column(0), 1), want)


JSON_NUMBERS = [(text, t) for t in (pa.int8(), pa.int64(), pa.uint8(), pa.float32(), pa.float64(),
                                    pa.decimal128(10, 2), pa.timestamp("ms"), pa.timestamp("ns", "UTC"))
                for text in ("3", "2.0", "2.5", "300", "-1", "1e20", "1e39", "1e400", "2.555",
                             '"2024-01-01T00:00:00.001"', '"2024-01-01T00:00:00.000001"', "true", '"3"')]


@pytest.mark.parametrize("case", JSON_NUMBERS, ids=[f"{a}->{b}" for a, b in JSON_NUMBERS])
def test_json_decode_never_changes_a_value(case):
    # JSON may be stricter than the oracle (2.0 is not an int64 to Arrow's reader), never looser.
    # A JSON number is decimal text: into a float it rounds as every parser does, into a
    # decimal it is exact (and so is a number in a string).
    import json
    from decimal import Decimal, InvalidOperation

    import numpy as np

    text, t = case
    try:
        v = json.loads(text)
    except ValueError:
        v = None
    if isinstance(v, str) and v.startswith("2024"):
        v = dt.datetime.fromisoformat(v)
    if pa.types.is_decimal(t):
        try:
            v = Decimal(text.strip('"'))
        except InvalidOperation:
            pass
    want = expected(v, t)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and pa.types.is_floating(t):
        with np.errstate(over="ignore"):
            r = float(np.float32(v)) if t == pa.float32() else float(v)
        want = r if np.isfinite(r) else ERROR
    decoded = JsonFormat(pa.schema([("x", t)])).decode([b'{"x": null}', b'{"x": %s}' % text.encode()])
    if decoded.failures:
        assert [f.index for f in decoded.failures] == [1]
        assert decoded.failures[0].field in ("x", None)
    else:
        assert want != ERROR, f"{text} into {t} gave {decoded.batch.column(0)[1]} without an error"
        assert same(held(decoded.batch.column(0), 1), want)


# -- fields the schema lacks ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_format_extra_ignore_is_the_default_and_error_fails_the_message_naming_the_field(name):
    import json

    from heliosdb.formats import EXTRA_FIELD, format_for

    encode = (lambda d: json.dumps(d).encode()) if name == "json" else msgpack.packb
    schema = pa.schema([("a", pa.int64())])
    payloads = [encode({"a": 1}), encode({"a": 2, "b": 3, "c": 4}), encode({"a": 3})]
    assert format_for(name, schema).decode(payloads).batch.to_pydict() == {"a": [1, 2, 3]}
    decoded = format_for(name, schema, extra="error").decode(payloads)
    assert decoded.batch.to_pydict() == {"a": [1, 3]}
    assert [(f.index, f.reason, f.field) for f in decoded.failures] == [(1, EXTRA_FIELD, "b")]
    assert "'b', 'c'" in decoded.failures[0].detail


def test_format_extra_takes_only_ignore_or_error():
    from heliosdb.errors import ConfigError
    from heliosdb.formats import format_for

    with pytest.raises(ConfigError, match="extra="):
        format_for("json", pa.schema([("a", pa.int64())]), extra="drop")


# -- Arrow arrays of one type cast to another (the vectorised path) -------------------------------
PAIRS = [(s, t) for s in TYPES for t in TYPES]


NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
DAY_NS = 86_400 * 10**9


def expected_from_array(arr: pa.Array, t: pa.DataType):
    """The oracle for the value at row 1 of ``arr`` cast to ``t``: Python values for numbers,
    strings and booleans; exact nanosecond arithmetic on the stored counts for times."""
    src = arr.type
    if not (pa.types.is_timestamp(src) or pa.types.is_date32(src)):
        return expected(arr[1].as_py(), t)
    raw = held(arr, 1)
    ns = raw * NS[src.unit] if pa.types.is_timestamp(src) else raw * DAY_NS
    if pa.types.is_timestamp(t):
        if pa.types.is_date32(src) and t.tz not in (None, "UTC"):
            return ERROR
        count, rest = divmod(ns, NS[t.unit])
        return count if rest == 0 and -(2**63) <= count < 2**63 else ERROR
    if pa.types.is_date32(t):
        days, rest = divmod(ns, DAY_NS)
        return days if rest == 0 else ERROR
    return ERROR                                   # a time is not a number, string or bool


@pytest.mark.parametrize("pair", PAIRS, ids=[f"{s}->{t}" for s, t in PAIRS])
def test_cast_exact_never_changes_a_value(pair):
    # Every value the input type holds exactly, as an input array of that type: cast_exact
    # gives exactly the oracle's value, or None (the caller then looks value by value).
    src, t = pair
    for v in VALUES:
        if expected(v, src) == ERROR:
            continue
        arr, bad = to_column([None, v, None], src)
        assert not bad
        out = cast_exact(arr, t)
        if out is None:
            continue
        want = expected_from_array(arr, t)
        assert want != ERROR, f"{v!r} as {src} cast to {t} gave {out[1]} without an error"
        assert out.type == t and out.null_count == 2
        assert same(held(out, 1), want), (v, held(out, 1), want)


def test_pandas_timestamps_keep_their_nanoseconds_or_are_refused():
    import pandas as pd
    import pyarrow as pa

    from heliosdb.formats.values import to_column

    v = [pd.Timestamp(1_700_000_000_123_456_789, tz="UTC"), None]
    col, bad = to_column(v, pa.timestamp("ns", tz="UTC"))
    assert bad == [] and col[0].value == 1_700_000_000_123_456_789
    col, bad = to_column(v, pa.timestamp("us", tz="UTC"))
    assert col is None and bad[0][0] == 0 and "nanoseconds" in bad[0][1]
