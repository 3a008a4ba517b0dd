"""Planning a join: its output schema (Polars' rule), the errors that name the column and the
side, the stages that read two inputs (with parallelism: hash exchanges on both sides), the
composite source, column pruning per side, and explain()."""
from __future__ import annotations

from datetime import timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import heliosdb as hdb
from heliosdb.errors import PlanError
from heliosdb.logical import Join, LogicalPlan, Node, Sink
from heliosdb.plan import build

from .. import sidetag


@pytest.fixture
def tagger(monkeypatch):
    """Joins built as the two-input test operator (planning builds operators)."""
    sidetag.install(monkeypatch)


def sides(env, left_batch=None, right_batch=None):
    left = env.from_arrow(pa.table({"ts": [1000, 2000], "k": [1, 2], "v": [1.0, 2.0]}))
    right = env.from_arrow(pa.table({"ts": [1500], "id": pa.array([1], pa.int32()), "v": [5.0],
                                     "w": ["x"]}))
    if left_batch:
        left = left.with_batch_size(left_batch)
    if right_batch:
        right = right.with_batch_size(right_batch)
    return left.with_watermark("ts"), right.with_watermark("ts")


def plan_of(stream, explain=True):
    env = stream._env
    return build(env, [Node(Sink(hdb.sinks.memory()), stream._node, "out")], explain=explain)


@pytest.mark.parametrize("kwargs, names", [
    (dict(left_on="k", right_on="id"), ["ts", "k", "v", "ts_right", "id", "v_right", "w"]),
    (dict(left_on="k", right_on="id", suffix="_r"), ["ts", "k", "v", "ts_r", "id", "v_r", "w"]),
    (dict(left_on="k", right_on="id", window=hdb.TumblingWindow.of(1)),
     ["window_start", "window_end", "ts", "k", "v", "ts_right", "id", "v_right", "w"]),
    (dict(left_on=["k", "v"], right_on=["id", "v"], between=(-1, 1)), ["ts", "k", "v", "ts_right", "id", "v_right", "w"]),
])
def test_output_columns_follow_polars(kwargs, names):
    left, right = sides(hdb.StreamEnvironment())
    assert left.join(right, **kwargs).schema.names == names


def test_keys_named_alike_appear_once_in_the_type_both_fit():
    env = hdb.StreamEnvironment()
    left = env.from_arrow(pa.table({"k": pa.array([1], pa.int32()), "a": [1]}))
    right = env.from_arrow(pa.table({"k": pa.array([1], pa.int64()), "b": [2]}))
    s = left.join(right, on="k").schema
    assert s.names == ["k", "a", "b"] and s.field("k").type == pa.int64()
    full = left.join(right, on="k", how="full").schema
    assert full.field("a").nullable and full.field("b").nullable


def test_join_asof_keeps_every_left_row():
    left, right = sides(hdb.StreamEnvironment())
    j = left.join_asof(right, left_on="k", right_on="id", tolerance=timedelta(seconds=1))
    assert j._node.step.how == "left" and j._node.step.tolerance_ns == 10**9
    assert j.schema.names == ["ts", "k", "v", "ts_right", "id", "v_right", "w"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(on="id"), "join key 'id' is not a column of the left input"),
    (dict(left_on="k", right_on="nope"), "join key 'nope' is not a column of the right input"),
    (dict(left_on=["k", "v"], right_on=["id"]), "as many left keys as right keys"),
    (dict(left_on="k", right_on="w"), "join key left.k (int64) and right.w (string) cannot be compared"),
    (dict(left_on="k", right_on="id", how="outer"), "join(how='outer') is not a join type (you probably meant "
                                                    "how='full'"),
    (dict(left_on="k", right_on="id", how="cross"), "how= 'inner' | 'left' | 'right' | 'full'"),
    (dict(left_on="k", right_on="id", how="semi"), "semi and anti joins are not available for streams"),
    (dict(left_on="k", right_on="id", how="anti", between=(0, 1)), "an interval join takes how= 'inner'"),
    (dict(left_on="k"), "needs on="),
    (dict(on="k", left_on="k", right_on="id"), "not both"),
    (dict(left_on="k", right_on="id", window=hdb.TumblingWindow.of(1), between=(0, 1)), "not both"),
    (dict(left_on="k", right_on="id", between=(1, 0)), "lower <= upper"),
    (dict(left_on="k", right_on="id", window=hdb.TumblingWindow.of(1), ttl=5), "ttl= applies to a regular join"),
    (dict(left_on="k", right_on="id", window=5), "join(window=) takes a window spec"),
])
def test_a_wrong_join_is_refused_naming_what_is_wrong(kwargs, message):
    left, right = sides(hdb.StreamEnvironment())
    with pytest.raises(PlanError) as e:
        left.join(right, **kwargs)
    assert message in str(e.value)


def test_event_time_joins_need_a_watermark_on_both_sides():
    env = hdb.StreamEnvironment()
    left, right = sides(env)
    plain = env.from_arrow(pa.table({"ts": [1], "id": [1]}))
    with pytest.raises(PlanError, match="the right input has none; call .with_watermark"):
        left.join(plain, left_on="k", right_on="id", between=(0, 1))
    with pytest.raises(PlanError, match="the right input has none"):
        left.join_asof(plain, left_on="k", right_on="id")
    left.join(plain, left_on="k", right_on="id")          # a regular join of bounded inputs: fine


def test_a_regular_join_of_two_unbounded_streams_needs_a_ttl():
    env = hdb.StreamEnvironment()
    a, b = env.generate(rate=10), env.generate(rate=10)
    with pytest.raises(PlanError, match=r"give join\(ttl=timedelta"):
        a.join(b, on="key")
    assert a.join(b, on="key", ttl=timedelta(minutes=1))._node.step.ttl_ns == 60 * 10**9
    # One bounded side: the unbounded side's rows would still wait for ever.
    with pytest.raises(PlanError, match=r"of an unbounded stream \(left\) with a bounded one .* join\(ttl=.*"
                                        r"use a lookup join: join\(hdb.table"):
        a.join(env.generate(count=5), on="key")
    with pytest.raises(PlanError, match=r"of an unbounded stream \(right\)"):
        env.generate(count=5).join(a, on="key")
    env.generate(count=5).join(env.generate(count=7), on="key")     # both bounded: every row ends
    cfg = hdb.StreamingConfig(state=hdb.StateConfig(ttl=timedelta(hours=1)))
    env2 = hdb.StreamEnvironment(cfg)
    env2.generate(rate=10).join(env2.generate(rate=10), on="key")   # the config's TTL


def test_joining_streams_of_two_environments_is_refused():
    left, _ = sides(hdb.StreamEnvironment())
    _, right = sides(hdb.StreamEnvironment())
    with pytest.raises(PlanError, match="same StreamEnvironment"):
        left.join(right, left_on="k", right_on="id")


def test_late_output_after_a_join_names_a_side():
    left, right = sides(hdb.StreamEnvironment())
    j = left.join(right, left_on="k", right_on="id", between=(0, 1))
    assert j.late_output("left").schema == left.schema
    assert j.late_output("right").schema == right.schema
    with pytest.raises(PlanError, match="side='left' or 'right'"):
        j.late_output()
    regular = left.join(right, left_on="k", right_on="id")
    with pytest.raises(PlanError, match=r"late_output\('left'\): step 'join-\d+' is a regular join, which has no late"):
        regular.late_output("left")


@pytest.mark.usefixtures("tagger")
def test_a_job_of_two_sources_reads_them_through_one_composite_source():
    left, right = sides(hdb.StreamEnvironment(), left_batch=7, right_batch=3)
    plan, _, state_ops, lines = plan_of(left.join(right, left_on="k", right_on="id"))
    assert plan.source.inputs == 2 and plan.input_batching[0][0] == 7 and plan.input_batching[1][0] == 3
    join = [st for st in plan.stages if st.sides]
    assert len(join) == 1 and join[0].n_inputs == 2 and join[0].sides == [0, 1]
    feeding = [i for i, st in enumerate(plan.stages) if plan.stages.index(join[0]) in st.children]
    assert sorted(plan.stages[i].origin for i in feeding) == [0, 1]
    assert [op.kind for op in state_ops].count("side_tagger") == 1
    text = "\n".join(lines)
    assert "2 inputs read in turn" in text and "input 0 [from_arrow-1]" in text and "input 1 [from_arrow-2]" in text
    assert "joins left from stage-0 and right from stage-1" in text


@pytest.mark.usefixtures("tagger")
@pytest.mark.parametrize("n", [2, 3])
def test_with_parallelism_both_inputs_are_exchanged_on_their_keys(n):
    left, right = sides(hdb.StreamEnvironment())
    j = left.join(right, left_on="k", right_on="id").set_parallelism(n)
    plan, _, state_ops, lines = plan_of(j)
    subtasks = [st for st in plan.stages if st.sides]
    assert len(subtasks) == n
    exchanges = [st.partitioner for st in plan.stages if st.partitioner is not None]
    assert sorted(p.keys[0] for p in exchanges) == ["id", "k"] and all(p.n == n for p in exchanges)
    right_part = next(p for p in exchanges if p.keys == ["id"])
    assert right_part.casts == [pa.int64()]               # int32 keys hashed as int64, as the left's
    placements = [op.placement for op in state_ops]
    assert [(p.subtask, p.parallelism, p.keys, p.key_types) for p in placements] == [
        (i, n, ("k",), (pa.int64(),)) for i in range(n)]
    text = "\n".join(lines)
    assert f"join-5#0..join-5#{n - 1} (threads" in text and f"parallelism {n}, joins left from" in text
    assert f"merges {n} inputs" in text


@pytest.mark.usefixtures("tagger")
def test_the_environments_parallelism_applies_to_a_join():
    left, right = sides(hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=2)))
    plan, *_ = plan_of(left.join(right, left_on="k", right_on="id"))
    assert len([st for st in plan.stages if st.sides]) == 2


@pytest.mark.usefixtures("tagger")
def test_each_source_reads_only_the_columns_its_side_needs(tmp_path):
    pq.write_table(pa.table({"ts": [1], "id": [1], "big": ["x"], "w": [2.0]}), tmp_path / "r.parquet")
    env = hdb.StreamEnvironment()
    left = env.from_arrow(pa.table({"ts": [1], "k": [1], "unused": [0]}))
    right = env.from_parquet(str(tmp_path / "r.parquet"))
    j = left.join(right, left_on="k", right_on="id").key_by("k").aggregate(s=hdb.sum("w"))
    plan, *_ = plan_of(j)
    assert [r.schema.names for r in plan.source.readers] == [["k"], ["id", "w"]]


@pytest.mark.usefixtures("tagger")
def test_a_self_join_reads_the_stream_as_both_sides():
    left, _ = sides(hdb.StreamEnvironment())
    j = left.join(left, on="k")
    plan, *_ = plan_of(j)
    assert plan.source.inputs == 1 and len([st for st in plan.stages if st.sides]) == 1


def test_sources_no_join_connects_are_still_separate_jobs():
    env = hdb.StreamEnvironment()
    a = Node(Sink(None), env.from_arrow(pa.table({"x": [1]}))._node, "a")
    b = Node(Sink(None), env.from_arrow(pa.table({"x": [1]}))._node, "b")
    with pytest.raises(PlanError, match="2 groups of sources that no join connects"):
        LogicalPlan([a, b])


def test_a_join_step_validates_itself():
    with pytest.raises(PlanError, match="keeps every left row"):
        Join("asof", ("k",), ("k",), how="full")
    with pytest.raises(PlanError, match="names a column twice"):
        Join("regular", ("k", "k"), ("a", "b"))
    assert Join("asof", ("k",), ("k",), how="inner").how == "inner"


@pytest.mark.usefixtures("tagger")
def test_explain_estimates_a_joins_state_from_both_inputs():
    left, right = sides(hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=1)))
    w = left.join(right, left_on="k", right_on="id", window=hdb.TumblingWindow.of(10))
    (e,) = w.explain(events_per_second=1000).estimates
    # the wider row (right: ts 8, id 4, v 8, w 4 + 16) x 10 s x 1000/s x parallelism 1
    assert e.window_s == 10 and e.event_bytes == 40 and e.bytes == 400_000
    assert [c for c, _, _ in e.columns][:3] == ["left.ts", "left.k", "left.v"]
    interval = left.join(right, left_on="k", right_on="id", between=(-2, 3)).explain(events_per_second=1)
    assert interval.estimates[0].window_s == 5
    asof = left.join_asof(right, left_on="k", right_on="id").explain(events_per_second=1)
    assert asof.estimates[0].bytes is None and "as-of" in asof.estimates[0].window_from


def test_explain_shows_each_joins_parameters_and_where_each_sides_late_rows_go():
    env = hdb.StreamEnvironment(hdb.StreamingConfig(parallelism=2))
    left, right = sides(env)
    j = left.join(right, left_on="k", right_on="id", how="left",
                  between=(timedelta(milliseconds=-600), timedelta(seconds=1)))
    j.sink(hdb.sinks.memory())
    j.late_output("right").sink(hdb.sinks.memory())
    text = str(env.explain())
    assert "join-5#0..join-5#1 (threads" in text and "by hash of k" in text and "by hash of id" in text
    assert ("join[join-5#0] interval join left on ['k'] = ['id'], right time in [left - 0.6s, left + 1s]; "
            "late rows: left dropped, right to late_output('right')") in text
    assert "(a join keeps the rows of both inputs themselves" in text
    regular = left.join(right, left_on="k", right_on="id", ttl=timedelta(hours=1)).explain()
    assert "regular join inner on ['k'] = ['id'], ttl 3600s\n" in str(regular) + "\n"
