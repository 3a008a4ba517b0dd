"""pytest-benchmark suite for W3: ``pytest benchmarks/test_w3.py --benchmark-only``.

N defaults to 200K (W3 on the out-of-order path is slow today; ``python -m benchmarks.w3``
is the full run); set ``W3_N`` for another size.  Each case validates its output against the
DuckDB oracle before timing.
"""
import os

import pytest

from benchmarks import w3data
from benchmarks.w3 import heliosdb_w3

N = int(os.environ.get("W3_N", "200000"))


@pytest.fixture(scope="module")
def w3():
    data = w3data.make_data(N)
    return data, {"arrival": w3data.duckdb_w3(data.arrival, watermarks=w3data.split_watermarks(data.arrival)),
            "sorted": w3data.duckdb_w3(data.sorted)}


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("order", ["arrival", "sorted"])
def test_w3_throughput(benchmark, w3, order, parallelism):
    data, refs = w3
    table = getattr(data, order)
    w3data.validate(heliosdb_w3(table, parallelism), refs[order])
    benchmark.extra_info["events"] = N
    benchmark.pedantic(heliosdb_w3, args=(table, parallelism), rounds=3, warmup_rounds=0)


def test_w3_duckdb(benchmark, w3):
    data, _ = w3
    benchmark.extra_info["events"] = N
    benchmark.pedantic(w3data.duckdb_w3, args=(data.arrival,), rounds=3, warmup_rounds=1)
