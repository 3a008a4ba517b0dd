"""Join state: zero bytes once the inputs end and the watermark passes, bounded while running,
the memory backend's bound, and the RocksDB backend (rows on disk) giving the memory
backend's results."""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import heliosdb as hdb
from heliosdb.errors import HeliosError
from heliosdb.operators.base import WATERMARK_MAX
from heliosdb.operators.join import JoinSpec, make_join
from heliosdb.state.rows import RECORD_BYTES

from .harness import MS, batch, drive, finish, normalize, schedules, schemas
from .test_snapshot import CONFIGS, spec_for


def steady(op, left, right, steps=400, per=20, keys=50, strings=False):
    """In-order rows on both sides, a watermark after each step; returns the most state seen."""
    most = 0
    rng = np.random.default_rng(1)
    for t in range(steps):
        for side in (0, 1):
            k = rng.integers(0, keys, per).tolist()
            rows = [(t, int(x), f"s{int(x) * 7919 + t}" if strings else "a", t * per + i) for i, x in enumerate(k)]
            op.process_side(side, batch(side, rows, left, right))
        op.on_watermark(t * MS)
        most = max(most, op.state_size_bytes())
    return most


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_is_zero_bytes_once_the_watermark_passes_the_end(name):
    spec = spec_for(name, True)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right)
    steady(op, left, right, steps=50)
    assert op.state_size_bytes() > 0
    op.on_watermark(WATERMARK_MAX)
    assert op.state_size_bytes() == 0
    assert op.watermark_ns() is None
    op.close()
    assert op.state_size_bytes() == 0


@pytest.mark.parametrize("name", ["tumbling-full", "sliding-left", "session-full", "interval-full",
                                  "asof-left", "regular-full"])
def test_state_stays_bounded_by_the_open_windows_while_running(name):
    # Ever-new string keys: the key tables must not keep every key ever seen either.
    spec = spec_for(name, True)
    left, right, _, _ = schemas(True)
    short = make_join(spec, left, right)
    most_short = steady(short, left, right, steps=100, strings=True)
    long = make_join(spec, left, right)
    most_long = steady(long, left, right, steps=1000, strings=True)
    assert most_long < 3 * most_short


def test_state_over_the_memory_bound_stops_with_the_fix():
    spec = spec_for("regular-inner-forever", True)
    left, right, _, _ = schemas(True)
    op = make_join(spec, left, right, name="j", max_state_bytes=50_000)
    with pytest.raises(HeliosError, match=r"step 'j': join state is .* over the memory backend's bound.*rocksdb"):
        steady(op, left, right, steps=200)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(steps=schedules(max_steps=12, unique_right_times=True))
def test_rocksdb_backend_gives_the_memory_results(name, steps, tmp_path):
    spec = spec_for(name, False)
    left, right, _, _ = schemas(False)
    mem = make_join(spec, left, right, name="j")
    disk = make_join(spec, left, right, name="j", backend=hdb.StateBackend.rocksdb(path=str(tmp_path)))
    a = finish(mem, drive(mem, steps, left, right))
    b = finish(disk, drive(disk, steps, left, right))
    window = spec.kind == "window"
    assert normalize(a.rows, window) == normalize(b.rows, window)
    assert [p for p in os.listdir(tmp_path) if not p.startswith(".")] == []     # files gone at close


def test_rocksdb_backend_keeps_the_rows_out_of_memory(tmp_path):
    spec = spec_for("regular-inner-forever", True)
    left, right, _, _ = schemas(True)
    mem = make_join(spec, left, right)
    disk = make_join(spec, left, right, backend=hdb.StateBackend.rocksdb(path=str(tmp_path)))
    steady(mem, left, right, steps=30)
    steady(disk, left, right, steps=30)
    rows = sum(s.rows.nbytes() for s in mem.sides)
    # the rows count in the state size as the bytes of their records (and of the rows not yet
    # gathered into one, below RECORD_BYTES), but not in memory
    held = disk._db.held_bytes
    pending = sum(s.rows.nbytes() for s in disk.sides) - held
    assert rows > 0 and held > 0 and 0 <= pending < RECORD_BYTES
    assert disk.state_size_bytes() - held - pending <= mem.state_size_bytes() - rows
    assert os.listdir(tmp_path)
    disk.close()
    assert os.listdir(tmp_path) == []
