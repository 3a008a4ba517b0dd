"""``read_state(url, operator=)``: a checkpoint's state as an Arrow table, checked against the
input the checkpoint had read.

A checkpoint records the source position (rows read) and the window's watermark; the open
windows in its state must be exactly the (pane, key) groups of those rows whose window had not
closed by that watermark, with their counts and sums::

    rows 0 .. position-1 read  ->  groups by (pane, k) with pane end > watermark
"""
from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

import heliosdb as hdb
from heliosdb.checkpoint import read_state
from heliosdb.testing import CrashAt, run_job

from . import pipelines as P

PANE_MS = 2000          # the "tumbling" pipeline's window


@pytest.fixture(scope="module")
def crashed(tmp_path_factory):
    """A tumbling-window job (parallelism 2) crashed at batch 20, with 3 checkpoints kept."""
    tmp = tmp_path_factory.mktemp("read_state")
    table = P.events()
    storage = str(tmp / "ckpt")
    _, stats, err = run_job(P.build("tumbling", "arrow", str(tmp / "out"), table),
                            P.config(storage, 2, retain=3), "rs", CrashAt(20))
    assert err is not None and stats.count >= 2
    job = os.path.join(storage, "rs")
    committed = sorted(n for n in os.listdir(job)
                       if os.path.exists(os.path.join(job, n, "_manifest.json")))
    return table, job, committed


def expected_open_windows(table, manifest: dict) -> pd.DataFrame:
    position = manifest["source"]["row"]
    watermark = max(e["meta"]["watermark"] for e in manifest["operators"].values() if e["logical"] == "agg")
    df = table.slice(0, position).to_pandas()
    df["pane"] = (df.ts // PANE_MS * PANE_MS) * 1_000_000
    df = df[df.pane + PANE_MS * 1_000_000 > watermark]
    return (df.groupby(["pane", "k"]).agg(rows=("v", "size"), s=("v", "sum")).reset_index()
            .sort_values(["pane", "k"]).reset_index(drop=True))


def check(state, table, manifest) -> None:
    want = expected_open_windows(table, manifest)
    got = (state.select(["pane", "k", "rows", "v.sum"]).to_pandas().rename(columns={"v.sum": "s"})
           .sort_values(["pane", "k"]).reset_index(drop=True))
    assert len(want) > 0
    assert got[["pane", "k", "rows"]].equals(want[["pane", "k", "rows"]])
    assert np.allclose(got.s, want.s, rtol=1e-9)


def test_read_state_of_a_job_reads_its_newest_checkpoint(crashed):
    table, job, committed = crashed
    with open(os.path.join(job, committed[-1], "_manifest.json")) as f:
        newest = json.load(f)
    check(read_state(job, operator="agg"), table, newest)


def test_read_state_of_one_checkpoint_reads_that_checkpoint(crashed):
    table, job, committed = crashed
    with open(os.path.join(job, committed[0], "_manifest.json")) as f:
        oldest = json.load(f)
    state = read_state(os.path.join(job, committed[0]), operator="agg")
    check(state, table, oldest)


def test_read_state_of_a_value_set_table(crashed):
    table, job, committed = crashed
    groups = read_state(job, operator="agg")
    values = read_state(job, operator="agg", table="distinct.u")
    assert set(values.column_names) >= {"row", "value"}
    assert values.num_rows >= groups.num_rows
    assert set(values.column("value").to_pylist()) <= set(table.column("u").to_pylist())


def test_read_state_names_the_operators_there_are(crashed):
    _, job, _ = crashed
    with pytest.raises(hdb.CheckpointError) as err:
        read_state(job, operator="windw")
    msg = str(err.value)
    assert "'windw'" in msg and "agg" in msg


def test_read_state_names_the_tables_there_are(crashed):
    _, job, _ = crashed
    with pytest.raises(hdb.CheckpointError) as err:
        read_state(job, operator="agg", table="nope")
    assert "'nope'" in str(err.value) and "groups" in str(err.value)


def test_read_state_of_a_running_aggregate_has_one_row_per_key(tmp_path):
    table = P.events()
    storage = str(tmp_path / "ckpt")
    run_job(P.build("running", "arrow", str(tmp_path / "out"), table), P.config(storage, 2), "keys")
    state = read_state(os.path.join(storage, "keys"), operator="agg").to_pandas()
    want = table.to_pandas().groupby("k").agg(rows=("v", "size"), s=("v", "sum")).reset_index()
    got = state.rename(columns={"v.sum": "s"}).sort_values("k").reset_index(drop=True)
    assert got.k.tolist() == want.k.tolist()
    assert got.rows.tolist() == want.rows.tolist()
    assert np.allclose(got.s, want.s, rtol=1e-9)


def test_read_state_without_a_checkpoint_says_so(tmp_path):
    with pytest.raises(hdb.CheckpointError, match="no intact checkpoint"):
        read_state(str(tmp_path / "nothing"), operator="agg")
