"""Pane windowers (heliosdb/operators/windower.py and the specs' modules) against brute force:
which windows hold a pane, which panes a window merges, when a pane is done, which windows a
watermark closes, and the watermark grid the watermark step cuts batches on.

Timeline (sliding, size 5, slide 3, panes of 1)::

    windows  [0,5) [3,8) [6,11) ...   pane 4 is in [0,5) and [3,8); done at 8 + lateness
"""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

import heliosdb as hdb
from heliosdb.kernels.window import window_grid
from tests.oracle import window_starts


@settings(max_examples=300, deadline=None)
@given(slide=st.integers(1, 6), factor=st.integers(1, 5), extra=st.integers(0, 5),
       t=st.integers(-100, 100), tumbling=st.booleans())
def test_tumbling_and_sliding_windowers_match_brute_force(slide, factor, extra, t, tumbling):
    size = slide * factor + extra
    spec = hdb.TumblingWindow(size) if tumbling else hdb.SlidingWindow(size, slide)
    w = spec.windower()
    step = size if tumbling else slide
    pane = t - t % w.pane_ns
    starts = window_starts(t, size, step)
    assert [(w.start(x), w.end(x)) for x in w.windows_of(pane)] == [(s, s + size) for s in starts]
    assert w.last_end(pane) == max(starts) + size
    for x in w.windows_of(pane):
        panes = list(w.panes_of(x))
        assert panes[0] == w.start(x) and panes[-1] + w.pane_ns == w.end(x) and pane in panes
    assert w.pane_is_window == tumbling         # a key table per pane only when a window is one


def test_the_grid_of_a_spec_is_its_window_ends_and_their_lateness():
    # sliding 10 / 5 with lateness 3: ends at 10 + 5k, gone at 13 + 5k; sessions: every value
    offs, steps = window_grid([hdb.SlidingWindow(10, 5).grid(3)])
    assert (offs.tolist(), steps.tolist()) == ([10, 13], [5, 5])
    assert hdb.SessionWindow(5).grid(0) is None and not hdb.SessionWindow(5).two_phase
    assert hdb.TumblingWindow(4).grid(0) == (4, 4, 0) and hdb.TumblingWindow(4).two_phase
