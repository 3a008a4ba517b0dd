"""Numba kernels for event time: unit conversion and window assignment.

Times inside the engine are int64 nanoseconds UTC.  Windows align to the epoch:
``start = t - floormod(t, size)``, which is also right for negative times.
"""
from __future__ import annotations

import numpy as np

from ._jit import jit

INT64_MIN = np.iinfo(np.int64).min
INT64_MAX = np.iinfo(np.int64).max


@jit
def _window_start(t, size_ns):
    """Start of the window of size ``size_ns`` holding ``t``: floors toward -inf (epoch-aligned)."""
    r = t % size_ns
    if r < 0:
        r += size_ns
    return t - r


@jit
def tumbling_starts(ts, factor, size_ns):
    """Window start (ns) for every time ``ts * factor`` (ns); also the min and max start.

    Returns ``(starts, lo, hi, bad)`` where ``bad`` is the first index whose time overflows
    int64 nanoseconds (or whose window end would), else -1.  Empty input gives lo > hi.
    """
    n = ts.shape[0]
    out = np.empty(n, dtype=np.int64)
    lo = INT64_MAX
    hi = INT64_MIN
    limit = INT64_MAX // factor
    end_limit = INT64_MAX - size_ns
    bad = -1
    for i in range(n):
        t = ts[i]
        if t > limit or t < -limit:
            if bad < 0:
                bad = i
            out[i] = 0
            continue
        s = _window_start(t * factor, size_ns)
        if s > end_limit:
            if bad < 0:
                bad = i
            out[i] = 0
            continue
        out[i] = s
        if s < lo:
            lo = s
        if s > hi:
            hi = s
    return out, lo, hi, bad


@jit
def tumbling_runs(ts, factor, size_ns, max_runs):
    """Split ``ts`` (scaled by ``factor`` to ns) into runs of rows in the same window.

    Returns ``(bounds, starts, k, bad)``: run ``r`` is rows ``bounds[r]:bounds[r+1]`` in the
    window starting at ``starts[r]``.  ``k`` is -1 when there are more than ``max_runs`` runs
    (the caller then sorts the batch by window first).  ``bad`` is the first row whose time overflows int64 nanoseconds (or whose window end
    would), else -1.  Consecutive rows in
    the same window cost a comparison in the column's own unit, not a division, so ordered
    input is cheap.
    """
    n = ts.shape[0]
    bounds = np.empty(max_runs + 1, dtype=np.int64)
    starts = np.empty(max_runs, dtype=np.int64)
    limit = INT64_MAX // factor
    end_limit = INT64_MAX - size_ns
    k = 0
    cur = 0
    lo_raw = 1
    hi_raw = 0           # [lo_raw, hi_raw): raw times in the current window (empty at first)
    too_many = False
    for i in range(n):
        t = ts[i]
        if t >= lo_raw and t < hi_raw:
            continue
        if t > limit or t < -limit:
            return bounds, starts, 0, i
        s = _window_start(t * factor, size_ns)
        if s > end_limit:
            return bounds, starts, 0, i
        # raw bounds of window s: ceil(s / factor) .. ceil((s + size) / factor), within limit
        lo_raw = -((-s) // factor)
        hi_raw = -((-(s + size_ns)) // factor)
        if hi_raw > limit + 1:
            hi_raw = limit + 1
        if too_many or (k > 0 and s == cur):
            continue
        if k == max_runs:
            too_many = True      # keep scanning: an overflowing time must still be reported
            continue
        bounds[k] = i
        starts[k] = s
        k += 1
        cur = s
    if too_many:
        return bounds, starts, -1, -1
    bounds[k] = n
    return bounds, starts, k, -1


@jit
def _scaled(t, factor, limit):
    if t > limit:
        return INT64_MAX
    if t < -limit:
        return INT64_MIN + 1
    return t * factor


#: The thresholds of a watermark grid (see ``watermark_splits``): every value is one.
EXACT_GRID = (np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.int64))


def window_grid(specs) -> tuple:
    """The watermark grid of windows ``specs``: ``(size, slide, allowed_lateness)`` triples in
    ns (tumbling: slide = size), or None for a window kind whose thresholds depend on the data
    (sessions), which makes every watermark value a threshold.

    A window ending at ``e`` changes what it does with a row when the watermark reaches ``e``
    (emitted) and ``e + lateness`` (gone); ends are ``k * slide + size``.  So the thresholds
    are the values ``off + k * step`` for the pairs ``(size, slide)`` and
    ``(size + lateness, slide)``.

    >>> offs, steps = window_grid([(10, 5, 3)])
    >>> offs.tolist(), steps.tolist()
    ([10, 13], [5, 5])
    """
    offs, steps = [], []
    for spec in specs:
        if spec is None:
            return EXACT_GRID
        size, slide, lateness = spec
        offs += [size, size + lateness]
        steps += [slide, slide]
    return np.array(offs, dtype=np.int64), np.array(steps, dtype=np.int64)


@jit
def _bucket(w, off, step):
    """How many thresholds ``off + k * step`` are <= ``w`` (relative; INT64_MIN for none)."""
    if w < INT64_MIN + off:
        return INT64_MIN
    return (w - off) // step


@jit
def _crosses(a, b, offs, steps):
    """Whether a threshold of the grid lies in ``(a, b]``."""
    for j in range(offs.shape[0]):
        if _bucket(a, offs[j], steps[j]) != _bucket(b, offs[j], steps[j]):
            return True
    return False


@jit
def _watermark_pass(ts, factor, bound, max_seen, emitted, offs, steps, cuts, marks, fill):
    k = 0
    limit = INT64_MAX // factor
    for i in range(ts.shape[0]):
        t = _scaled(ts[i], factor, limit)
        if max_seen > INT64_MIN:
            implied = max_seen - bound
            if t < implied and implied > emitted and _crosses(emitted, implied, offs, steps):
                if fill:
                    cuts[k] = i
                    marks[k] = implied
                k += 1
                emitted = implied
        if t > max_seen:
            max_seen = t
    return k, max_seen


@jit
def _watermark_splits(ts, factor, bound, max_seen, emitted, offs, steps):
    none = np.empty(0, dtype=np.int64)
    k, seen = _watermark_pass(ts, factor, bound, max_seen, emitted, offs, steps, none, none, False)
    if k == 0:
        return none, none, 0, seen
    cuts = np.empty(k, dtype=np.int64)
    marks = np.empty(k, dtype=np.int64)
    _watermark_pass(ts, factor, bound, max_seen, emitted, offs, steps, cuts, marks, True)
    return cuts, marks, k, seen


def watermark_splits(ts, factor, bound, max_seen, emitted, grid=EXACT_GRID):
    """Where a batch must be cut so lateness does not depend on micro-batch boundaries.

    Row ``i`` is behind the watermark its predecessors imply (largest time before it minus
    ``bound``) when its time is smaller than that; such a row needs that watermark delivered
    before it, unless no threshold of ``grid`` (``window_grid()``: where the windows
    downstream change what they do with a row) lies between the last watermark delivered and
    that one: then every window treats the row alike under both, and the batch stays whole.
    Returns ``(cuts, marks, k, max_seen)``: cut the batch before rows ``cuts[:k]`` and emit
    watermarks ``marks[:k]`` there.  ``max_seen`` (ns) and ``emitted`` (the last watermark
    sent) carry over between batches.  Ordered input, or input disordered less than
    ``bound``, never needs a cut (and costs one pass that stores nothing); disordered input
    needs at most one cut per threshold the watermark passes, however many rows are behind.

    >>> import numpy as np
    >>> ts = np.array([0, 50, 40, 100, 60, 150, 110], np.int64)     # rows 2, 4, 6 are behind
    >>> watermark_splits(ts, 1, 0, 0, 0)[:3]              # watermark 0 sent; every value counts
    (array([2, 4, 6]), array([ 50, 100, 150]), 3)
    >>> watermark_splits(ts, 1, 0, 0, 0, window_grid([(100, 100, 0)]))[:3]   # windows of 100
    (array([4]), array([100]), 1)
    """
    offs, steps = grid
    return _watermark_splits(ts, factor, bound, max_seen, emitted, offs, steps)


@jit
def split_low(seen, live, bound):
    """The watermark of splits ``seen`` (largest time per split) that are ``live``: the
    smallest ``seen - bound``; a live split that has seen nothing holds it at INT64_MIN; no
    live split at all gives INT64_MAX (nothing holds the watermark back)."""
    low = INT64_MAX
    for j in range(seen.shape[0]):
        if live[j]:
            if seen[j] == INT64_MIN:
                return INT64_MIN
            w = seen[j] - bound
            if w < low:
                low = w
    return low


@jit
def _split_pass(ts, split, factor, bound, seen, live, left, emitted, offs, steps, cuts, marks, fill):
    k = 0
    limit = INT64_MAX // factor
    low = split_low(seen, live, bound)
    for i in range(ts.shape[0]):
        t = _scaled(ts[i], factor, limit)
        s = split[i]
        if low != INT64_MAX and t < low and low > emitted and _crosses(emitted, low, offs, steps):
            if fill:
                cuts[k] = i
                marks[k] = low
            k += 1
            emitted = low
        if not live[s]:
            live[s] = 1                     # an idle split that sends data again rejoins
            low = split_low(seen, live, bound)
        if t > seen[s]:
            old = seen[s] - bound if seen[s] != INT64_MIN else INT64_MIN
            seen[s] = t
            if old <= low:                  # it may have held the watermark back
                low = split_low(seen, live, bound)
        if left[s] > 0:
            left[s] -= 1
            if left[s] == 0:                # its last row: it holds nothing back any more
                live[s] = 0
                low = split_low(seen, live, bound)
    return k, low


@jit
def _split_watermark_splits(ts, split, factor, bound, seen, live, left, emitted, offs, steps):
    none = np.empty(0, dtype=np.int64)
    seen0, live0, left0 = seen.copy(), live.copy(), left.copy()
    k, low = _split_pass(ts, split, factor, bound, seen, live, left, emitted, offs, steps, none, none, False)
    if k == 0:
        return none, none, 0, low
    cuts = np.empty(k, dtype=np.int64)
    marks = np.empty(k, dtype=np.int64)
    seen[:] = seen0
    live[:] = live0
    left[:] = left0
    _split_pass(ts, split, factor, bound, seen, live, left, emitted, offs, steps, cuts, marks, True)
    return cuts, marks, k, low


def split_watermark_splits(ts, split, factor, bound, seen, live, emitted, grid=EXACT_GRID,
                           left=None):
    """``watermark_splits`` for a source of several splits (Kafka partitions, ...): each split
    has its own largest time ``seen[j]`` (ns, INT64_MIN: nothing yet), and the watermark is the
    smallest ``seen[j] - bound`` over the ``live`` splits (idle ones do not hold it back; a
    live split that has sent nothing holds it at INT64_MIN).  Row ``i`` belongs to split
    ``split[i]`` (an index into ``seen``/``live``, which are updated in place: a split that
    sends a row is live again).  ``left[j]`` (updated in place; default: unknown) counts the
    rows split ``j`` will still send when the source has said it ends: after the last one the
    split no longer holds the watermark back (-1: not known to end).  A row is behind when its time is below the watermark the rows
    before it imply; cuts follow the same rule as ``watermark_splits``.  Returns ``(cuts,
    marks, k, low)``, ``low`` being the watermark after the batch (INT64_MAX: no live split).

    So a split read late, or slowly, is not behind: the watermark waits for it.

    >>> import numpy as np
    >>> seen, live = np.full(2, INT64_MIN, np.int64), np.ones(2, np.uint8)
    >>> ts = np.array([100, 200, 300, 10, 20], np.int64)     # split 1 comes late, in order
    >>> split = np.array([0, 0, 0, 1, 1], np.int64)
    >>> cuts, marks, k, low = split_watermark_splits(ts, split, 1, 0, seen, live, INT64_MIN)
    >>> k, low, seen.tolist()
    (0, 20, [300, 20])
    """
    offs, steps = grid
    if left is None:
        left = np.full(len(seen), -1, np.int64)
    return _split_watermark_splits(ts, np.ascontiguousarray(split, np.int64), factor, bound,
                                   seen, live, left, emitted, offs, steps)
