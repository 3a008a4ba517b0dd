"""The memory state backend's bound: state over ``max_size_bytes`` fails the job with an error
naming the step, the size and the bound (never an out-of-memory kill later)."""
from __future__ import annotations

import re

import pytest

import heliosdb as hdb

from . import pipelines as P


@pytest.mark.parametrize("kind", ["tumbling", "sliding", "session", "running"])
def test_state_over_the_memory_bound_fails_naming_the_step_and_the_size(kind, tmp_path):
    cfg = hdb.StreamingConfig(parallelism=1, batch_size=P.BATCH,
                              state_backend=hdb.StateBackend.memory(max_size_bytes=20_000))
    env = hdb.StreamEnvironment(cfg)
    P.build(kind, "arrow", str(tmp_path / "out"), P.events())(env, None)
    with pytest.raises(hdb.HeliosError) as err:
        env.execute(name="bounded")
    msg = str(err.value)
    assert "'agg'" in msg, msg                       # the step
    assert "20,000 bytes" in msg, msg                # the bound
    size = int(re.search(r"state is ([\d,]+) bytes", msg).group(1).replace(",", ""))
    assert size > 20_000                             # the size it reached
    assert "max_size_bytes" in msg                   # the fix


def test_state_within_the_memory_bound_runs(tmp_path):
    cfg = hdb.StreamingConfig(parallelism=1, batch_size=P.BATCH,
                              state_backend=hdb.StateBackend.memory(max_size_bytes=64 * 2**20))
    env = hdb.StreamEnvironment(cfg)
    P.build("tumbling", "arrow", str(tmp_path / "out"), P.events())(env, None)
    assert env.execute(name="roomy").metrics["streaming_events_processed_total"] == P.N
