"""The fused stateless operator (``heliosdb/operators/fused.py``), end to end: what its
generated kernel outputs for filter / with_columns / select chains."""
import heliosdb as hdb
from heliosdb import col, lit


def test_string_literal_output_column_is_broadcast():
    env = hdb.StreamEnvironment()
    rows = [{"x": 1}, {"x": 5}, {"x": 7}]
    out = (env.from_iterable(rows).filter(col("x") > 2)
           .with_columns(tag=lit("big"), is_a=lit("a") == lit("a")).collect())
    assert out.to_pydict() == {"x": [5, 7], "tag": ["big", "big"], "is_a": [True, True]}
