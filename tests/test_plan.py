"""Planning (``heliosdb/plan.py``): what building the physical plan does to the user's steps."""
import heliosdb as hdb
from heliosdb import col


def test_planning_calls_a_map_batches_function_once_to_infer_its_schema():
    calls = []

    def tag(batch):
        calls.append(batch.num_rows)
        return batch

    env = hdb.StreamEnvironment()
    out = (env.from_iterable([{"x": 1}, {"x": 2}]).map_batches(tag)
           .filter(col("x") > 1).with_columns(y=col("x") * 2).collect())
    assert out.to_pydict() == {"x": [2], "y": [4]}
    assert calls == [0, 2]          # one empty batch to type the plan, then the data
