"""pytest-benchmark suite for W1: ``pytest benchmarks/ --benchmark-only``.

N defaults to 20M (DESIGN.md section 7); set ``W1_N`` for a smaller run.  Each benchmark
validates its output against the numpy reference before timing.
"""
import os

import pytest

from benchmarks import w1data

N = int(os.environ.get("W1_N", "20000000"))


@pytest.fixture(scope="module")
def w1():
    table = w1data.make_table(N)
    return table, w1data.reference(table)


ENGINES = {
    "heliosdb": w1data.heliosdb_w1,
    "duckdb": w1data.duckdb_w1,
    "polars": w1data.polars_w1,
    "numba_hand_fused": w1data.numba_w1,
}


@pytest.mark.parametrize("engine", list(ENGINES))
def test_w1_throughput(benchmark, w1, engine):
    table, ref = w1
    fn = ENGINES[engine]
    w1data.validate(fn(table), ref)
    benchmark.extra_info["events"] = N
    benchmark.pedantic(fn, args=(table,), rounds=5, warmup_rounds=1)
