# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Grouped accumulators beyond count/sum/min/max, their merges, and session segmentation.

Every accumulator is a set of arrays indexed by group id (see ``_hashagg.GroupTable``):

- variance: count, mean and M2, updated row by row with Welford's method and merged with Chan's
  formula, so long streams of large values do not lose precision;
- first / last: the arrival sequence number and the value code of the first (last) non-null
  value;
- merges ``dst[d[i]] <- combine(dst[d[i]], src[s[i]])`` for every accumulator, used when panes
  combine into a sliding window, sessions merge, or state is compacted.

``SessionSet`` assigns events to per-key sessions (gap-separated), merging sessions an event
bridges.  All loops run ``with nogil``.
"""
from libc.stdint cimport int64_t, uint64_t, uint8_t

import numpy as np

cdef int64_t I64_MAX = 0x7FFFFFFFFFFFFFFF


# -- variance ---------------------------------------------------------------------------------
def update_var(const int64_t[::1] gids, const double[::1] values, valid,
               int64_t[::1] cnt, double[::1] mean, double[::1] m2):
    """Welford: fold float64 values (skipping invalid rows) into count, mean, M2 (NaN spreads)."""
    cdef int64_t i, g, n = gids.shape[0], c
    cdef double v, d
    cdef const uint8_t[::1] ok
    cdef bint has_valid = valid is not None
    if has_valid:
        ok = valid
    with nogil:
        for i in range(n):
            if has_valid and not ok[i]:
                continue
            v = values[i]
            g = gids[i]
            c = cnt[g] + 1
            cnt[g] = c
            d = v - mean[g]
            mean[g] += d / c
            m2[g] += d * (v - mean[g])


def merge_var(const int64_t[::1] src, const int64_t[::1] dst,
              const int64_t[::1] s_cnt, const double[::1] s_mean, const double[::1] s_m2,
              int64_t[::1] d_cnt, double[::1] d_mean, double[::1] d_m2):
    """Chan et al.: combine (count, mean, M2) of group ``src[i]`` into group ``dst[i]``."""
    cdef int64_t i, a, b, na, nb, n = src.shape[0]
    cdef double delta
    with nogil:
        for i in range(n):
            a = dst[i]
            b = src[i]
            nb = s_cnt[b]
            if nb == 0:
                continue
            na = d_cnt[a]
            if na == 0:
                d_cnt[a] = nb
                d_mean[a] = s_mean[b]
                d_m2[a] = s_m2[b]
                continue
            delta = s_mean[b] - d_mean[a]
            d_cnt[a] = na + nb
            d_mean[a] = d_mean[a] + delta * nb / (na + nb)
            d_m2[a] = d_m2[a] + s_m2[b] + delta * delta * (<double> na) * nb / (na + nb)


# -- first / last -------------------------------------------------------------------------------
def update_first(const int64_t[::1] gids, const int64_t[::1] seqs, const int64_t[::1] codes, valid,
                 int64_t[::1] seq, int64_t[::1] val):
    """Keep the first non-null value per group; ``seq[g] == -1`` means none yet.

    ``seqs[i]`` is row ``i``'s arrival number: it decides first and last when groups merge.
    """
    cdef int64_t i, g, n = gids.shape[0]
    cdef const uint8_t[::1] ok
    cdef bint has_valid = valid is not None
    if has_valid:
        ok = valid
    with nogil:
        for i in range(n):
            if has_valid and not ok[i]:
                continue
            g = gids[i]
            if seq[g] < 0 or seqs[i] < seq[g]:
                seq[g] = seqs[i]
                val[g] = codes[i]


def update_last(const int64_t[::1] gids, const int64_t[::1] seqs, const int64_t[::1] codes, valid,
                int64_t[::1] seq, int64_t[::1] val):
    """Keep the last non-null value per group."""
    cdef int64_t i, g, n = gids.shape[0]
    cdef const uint8_t[::1] ok
    cdef bint has_valid = valid is not None
    if has_valid:
        ok = valid
    with nogil:
        for i in range(n):
            if has_valid and not ok[i]:
                continue
            g = gids[i]
            if seqs[i] > seq[g]:
                seq[g] = seqs[i]
                val[g] = codes[i]


def merge_pick(const int64_t[::1] src, const int64_t[::1] dst,
               const int64_t[::1] s_seq, const int64_t[::1] s_val,
               int64_t[::1] d_seq, int64_t[::1] d_val, bint earliest):
    """Merge first (``earliest``) or last values: keep the one with the smaller (larger) seq."""
    cdef int64_t i, a, b, n = src.shape[0]
    with nogil:
        for i in range(n):
            a = dst[i]
            b = src[i]
            if s_seq[b] < 0:
                continue
            if d_seq[a] < 0 or (earliest and s_seq[b] < d_seq[a]) or (not earliest and s_seq[b] > d_seq[a]):
                d_seq[a] = s_seq[b]
                d_val[a] = s_val[b]


# -- count / sum / min / max merges ---------------------------------------------------------------
def merge_add_i64(const int64_t[::1] src, const int64_t[::1] dst,
                  const int64_t[::1] s, int64_t[::1] d):
    """``d[dst[i]] += s[src[i]]`` (wrapping)."""
    cdef int64_t i, n = src.shape[0]
    with nogil:
        for i in range(n):
            d[dst[i]] = <int64_t> (<uint64_t> d[dst[i]] + <uint64_t> s[src[i]])


def merge_stats_f64(const int64_t[::1] src, const int64_t[::1] dst,
                    const double[::1] s_sum, const double[::1] s_min, const double[::1] s_max,
                    double[::1] d_sum, double[::1] d_min, double[::1] d_max):
    """Sum, min and max of group ``src[i]`` into group ``dst[i]`` (counts merge separately)."""
    cdef int64_t i, a, b, n = src.shape[0]
    cdef double v, m
    with nogil:
        for i in range(n):
            a = dst[i]
            b = src[i]
            d_sum[a] += s_sum[b]
            v = s_min[b]
            m = d_min[a]
            d_min[a] = v if v < m else m
            v = s_max[b]
            m = d_max[a]
            d_max[a] = v if v > m else m


def merge_stats_i64(const int64_t[::1] src, const int64_t[::1] dst,
                    const int64_t[::1] s_sum, const int64_t[::1] s_min, const int64_t[::1] s_max,
                    int64_t[::1] d_sum, int64_t[::1] d_min, int64_t[::1] d_max):
    cdef int64_t i, a, b, n = src.shape[0]
    cdef int64_t v, m
    with nogil:
        for i in range(n):
            a = dst[i]
            b = src[i]
            d_sum[a] = <int64_t> (<uint64_t> d_sum[a] + <uint64_t> s_sum[b])
            v = s_min[b]
            m = d_min[a]
            d_min[a] = v if v < m else m
            v = s_max[b]
            m = d_max[a]
            d_max[a] = v if v > m else m


# -- sessions -------------------------------------------------------------------------------------
cdef class SessionSet:
    """Per-key sessions of event time: ``[start, last + gap)``, kept disjoint per key.

    Sessions get ids 0, 1, 2, ... that are never reused (``compact`` renumbers); a key's open
    sessions form a linked list from ``head[key]``.  ``assign`` puts each event in the session
    its ``[t, t + gap)`` overlaps, starts one if none does, and merges the sessions an event
    bridges, logging every merge as (from, into) so accumulators can follow.
    """

    cdef public object key, start, last, nxt, alive, head
    cdef public int64_t n, gap

    def __init__(self, int64_t gap):
        self.gap = gap
        self.n = 0
        self.key = np.empty(64, np.int64)
        self.start = np.empty(64, np.int64)
        self.last = np.empty(64, np.int64)
        self.nxt = np.empty(64, np.int64)
        self.alive = np.zeros(64, np.uint8)
        self.head = np.full(64, -1, np.int64)

    def _reserve(self, int64_t sessions, int64_t keys):
        cap = len(self.key)
        if sessions > cap:
            while cap < sessions:
                cap *= 2
            for name in ("key", "start", "last", "nxt", "alive"):
                old = getattr(self, name)
                new = np.zeros(cap, old.dtype)
                new[: len(old)] = old
                setattr(self, name, new)
        cap = len(self.head)
        if keys > cap:
            while cap < keys:
                cap *= 2
            new = np.full(cap, -1, np.int64)
            new[: len(self.head)] = self.head
            self.head = new

    def assign(self, const int64_t[::1] kg, const int64_t[::1] ts, int64_t n_keys,
               int64_t late_before, int64_t[::1] out):
        """Session id per event (``-1``: late); returns the merge log as (from, into) arrays.

        An event is late when it joins no open session and ``t + gap <= late_before`` (its
        session would already be past the watermark plus the allowed lateness).
        """
        cdef int64_t m = kg.shape[0]
        self._reserve(self.n + m, n_keys)
        cdef int64_t[::1] key = self.key, start = self.start, last = self.last, nxt = self.nxt
        cdef int64_t[::1] head = self.head
        cdef uint8_t[::1] alive = self.alive
        # An event overlaps at most three disjoint sessions (each at least ``gap`` long, in
        # an open interval 2 gap long), so it merges at most two.
        merge_from = np.empty(2 * m, np.int64)
        merge_into = np.empty(2 * m, np.int64)
        cdef int64_t[::1] mf = merge_from, mi = merge_into
        cdef int64_t i, k, t, s, prev, target, nm = 0, nxt_s, gap = self.gap, count = self.n
        with nogil:
            for i in range(m):
                k = kg[i]
                t = ts[i]
                target = -1
                prev = -1
                s = head[k]
                while s >= 0:
                    nxt_s = nxt[s]
                    if t < last[s] + gap and start[s] < t + gap:
                        if target < 0:
                            target = s
                            prev = s
                        else:
                            # the event bridges ``target`` and ``s``: fold s into target
                            if start[s] < start[target]:
                                start[target] = start[s]
                            if last[s] > last[target]:
                                last[target] = last[s]
                            alive[s] = 0
                            nxt[prev] = nxt_s           # unlink s
                            mf[nm] = s
                            mi[nm] = target
                            nm += 1
                    else:
                        prev = s
                    s = nxt_s
                if target < 0:
                    if t + gap <= late_before:
                        out[i] = -1
                        continue
                    target = count
                    count += 1
                    key[target] = k
                    start[target] = t
                    last[target] = t
                    alive[target] = 1
                    nxt[target] = head[k]
                    head[k] = target
                else:
                    if t < start[target]:
                        start[target] = t
                    if t > last[target]:
                        last[target] = t
                out[i] = target
        self.n = count
        return merge_from[:nm], merge_into[:nm]

    def add(self, const int64_t[::1] kg, const int64_t[::1] start, const int64_t[::1] last, int64_t n_keys):
        """Add whole sessions (restoring a snapshot); returns their ids."""
        cdef int64_t m = kg.shape[0]
        self._reserve(self.n + m, n_keys)
        cdef int64_t[::1] key = self.key, st = self.start, la = self.last, nxt = self.nxt, head = self.head
        cdef uint8_t[::1] alive = self.alive
        out = np.empty(m, np.int64)
        cdef int64_t[::1] o = out
        cdef int64_t i, s
        with nogil:
            for i in range(m):
                s = self.n + i
                key[s] = kg[i]
                st[s] = start[i]
                la[s] = last[i]
                alive[s] = 1
                nxt[s] = head[kg[i]]
                head[kg[i]] = s
                o[i] = s
        self.n += m
        return out

    def remove(self, const int64_t[::1] sids):
        """Unlink sessions (closed and past their lateness) from their keys' lists."""
        cdef int64_t[::1] nxt = self.nxt, head = self.head, key = self.key
        cdef uint8_t[::1] alive = self.alive
        cdef int64_t i, s, p, q, n = sids.shape[0]
        with nogil:
            for i in range(n):
                s = sids[i]
                if not alive[s]:
                    continue
                alive[s] = 0
                p = -1
                q = head[key[s]]
                while q >= 0 and q != s:
                    p = q
                    q = nxt[q]
                if q == s:
                    if p < 0:
                        head[key[s]] = nxt[s]
                    else:
                        nxt[p] = nxt[s]

    def compact(self, const int64_t[::1] keep, const int64_t[::1] key_map, int64_t n_keys):
        """Keep sessions ``keep`` (ascending) as 0..len-1, keys renumbered by ``key_map``."""
        cdef int64_t m = keep.shape[0]
        key = np.asarray(key_map)[np.asarray(self.key)[np.asarray(keep)]]
        start = np.asarray(self.start)[np.asarray(keep)]
        last = np.asarray(self.last)[np.asarray(keep)]
        self.n = 0
        self.key = np.empty(max(64, 2 * m), np.int64)
        self.start = np.empty(max(64, 2 * m), np.int64)
        self.last = np.empty(max(64, 2 * m), np.int64)
        self.nxt = np.empty(max(64, 2 * m), np.int64)
        self.alive = np.zeros(max(64, 2 * m), np.uint8)
        self.head = np.full(max(64, n_keys), -1, np.int64)
        cdef int64_t[::1] k_ = self.key, st = self.start, la = self.last, nx = self.nxt, hd = self.head
        cdef int64_t[::1] k0 = key, s0 = start, l0 = last
        cdef uint8_t[::1] al = self.alive
        cdef int64_t i
        with nogil:
            for i in range(m):
                k_[i] = k0[i]
                st[i] = s0[i]
                la[i] = l0[i]
                al[i] = 1
                nx[i] = hd[k0[i]]
                hd[k0[i]] = i
        self.n = m

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, a).nbytes for a in ("key", "start", "last", "nxt", "alive", "head"))


# -- sessions over a run of parts (batches with watermarks between them) ----------------------------
cdef inline int64_t _first_ge(const int64_t[::1] wp, int64_t x, int64_t hi) noexcept nogil:
    """The first j in [0, hi] with wp[j] >= x (wp is non-decreasing and wp[hi] >= x)."""
    cdef int64_t lo = 0, mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if wp[mid] >= x:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef inline int64_t _imax(int64_t a, int64_t b) noexcept nogil:
    return a if a > b else b


def session_assign_run(SessionSet ss, const int64_t[::1] kg, const int64_t[::1] ts, int64_t n_keys,
                       const int64_t[::1] bounds, const int64_t[::1] limits, const int64_t[::1] wp,
                       int64_t base, uint8_t[::1] emitted, int64_t[::1] touched, int64_t[::1] last_op,
                       int64_t[::1] lo, int64_t[::1] into, int64_t[::1] out, int64_t[::1] rounds):
    """Assign the rows of a run's parts (part ``k`` is rows ``bounds[k]:bounds[k+1]``, and the
    watermark ``wp[k]`` was delivered before it, ``wp[P]`` after the last) to sessions exactly
    as one ``assign`` per part with the watermarks fired between them would, and schedule the
    accumulator work so that the caller can do it in a few vectorised *rounds*.

    Per part, one call per item folds the part's merges (each merged session into the session
    that survives the part) first, then the part's rows; a session emitted (at a watermark, or
    because the part's rows touched it while it ends before the watermark) gives the state it
    has then.  Here each session's operations get round numbers that keep their order: rows in
    the round ``lo[s]``, a part's merges into ``s`` in a round after every earlier operation
    of ``s`` and of the merged sessions, and an emission reads ``s`` at the end of the round
    of its last operation (later operations of ``s`` move to the next round).  Doing, round by
    round, the merges, then the rows (in row order), then the reads, gives every accumulator
    (floating-point sums and variances included) and every emitted row bit for bit.

    Per-session scratch arrays (sized by the caller to ``ss.n + rows``; values from earlier
    runs are ignored): ``touched`` (global part number ``base + k`` of the last touch: a
    session touched before ``base`` starts this run with no operations), ``last_op``, ``lo``,
    ``into`` (the session a merged one was folded into).  ``emitted`` is the operator's flag.

    Returns ``(merge_from, merge_into, merge_round, events, updates)``; ``out[i]`` is row i's
    session (-1: late), ``rounds[i]`` its round; ``events`` rows are ``(kind, sid, pos,
    start, end, round)``: kind 0 a session due at the watermark before part j (``pos = 2 (base
    + j) - 1``), found when a row touches it; kind 1 a session touched by part k's rows that
    ends by its watermark (``pos = 2 (base + k)``, a first result or an update: ``updates``
    counts those).  Sessions due at a watermark and untouched since are the caller's to find.
    """
    cdef int64_t P = bounds.shape[0] - 1
    cdef int64_t m = bounds[P] - bounds[0]
    ss._reserve(ss.n + m, n_keys)
    if emitted.shape[0] < ss.n + m or touched.shape[0] < ss.n + m or last_op.shape[0] < ss.n + m \
            or lo.shape[0] < ss.n + m or into.shape[0] < ss.n + m:
        raise ValueError("session_assign_run: per-session arrays smaller than sessions + rows")
    cdef int64_t[::1] key = ss.key, start = ss.start, last = ss.last, nxt = ss.nxt, head = ss.head
    cdef uint8_t[::1] alive = ss.alive
    # A row touches at most three sessions (see ``assign``): at most 2 m merges, 3 m first
    # touches (each may find an emission), and m sessions alive after their part.
    merge_from = np.empty(2 * m + 1, np.int64)
    merge_into = np.empty(2 * m + 1, np.int64)
    merge_round = np.empty(2 * m + 1, np.int64)
    events = np.empty((4 * m + 1, 6), np.int64)
    tlist = np.empty(3 * m + 1, np.int64)
    cdef int64_t[::1] mf = merge_from, mi = merge_into, mr = merge_round, tl = tlist
    cdef int64_t[:, ::1] ev = events
    cdef int64_t gap = ss.gap, count = ss.n, nm = 0, ne = 0, updates = 0
    cdef int64_t k, gk, lim, w, i, kk, t, s, nxt_s, prev, target, j, e, c, nm_k, ntl, end
    with nogil:
        for k in range(P):
            gk = base + k
            lim = limits[k]
            w = wp[k]
            nm_k = nm
            ntl = 0
            for i in range(bounds[k], bounds[k + 1]):
                kk = kg[i]
                t = ts[i]
                target = -1
                prev = -1
                s = head[kk]
                while s >= 0:
                    nxt_s = nxt[s]
                    # open sessions only: one past end + lateness is gone (removed at the
                    # watermark that passed it; the caller unlinks it after the run)
                    if last[s] + gap > lim and t < last[s] + gap and start[s] < t + gap:
                        if touched[s] != gk:
                            if touched[s] < base:           # first touch in this run
                                last_op[s] = 0
                                lo[s] = 1
                            end = last[s] + gap
                            if emitted[s] == 0 and end <= w:
                                # due at a watermark since it last changed: emitted with the
                                # state it had then
                                j = _first_ge(wp, end, k)
                                ev[ne, 0] = 0
                                ev[ne, 1] = s
                                ev[ne, 2] = 2 * (base + j) - 1
                                ev[ne, 3] = start[s]
                                ev[ne, 4] = end
                                ev[ne, 5] = last_op[s]
                                ne += 1
                                emitted[s] = 1
                                lo[s] = _imax(lo[s], last_op[s] + 1)
                            touched[s] = gk
                            tl[ntl] = s
                            ntl += 1
                        if target < 0:
                            target = s
                            prev = s
                        else:
                            # the event bridges ``target`` and ``s``: fold s into target
                            if start[s] < start[target]:
                                start[target] = start[s]
                            if last[s] > last[target]:
                                last[target] = last[s]
                            alive[s] = 0
                            nxt[prev] = nxt_s
                            emitted[target] = emitted[target] | emitted[s]
                            into[s] = target
                            mf[nm] = s
                            nm += 1
                    else:
                        prev = s
                    s = nxt_s
                if target < 0:
                    if t + gap <= lim:
                        out[i] = -1
                        continue
                    target = count
                    count += 1
                    key[target] = kk
                    start[target] = t
                    last[target] = t
                    alive[target] = 1
                    nxt[target] = head[kk]
                    head[kk] = target
                    emitted[target] = 0
                    touched[target] = gk
                    last_op[target] = 0
                    lo[target] = 1
                    tl[ntl] = target
                    ntl += 1
                else:
                    if t < start[target]:
                        start[target] = t
                    if t > last[target]:
                        last[target] = t
                out[i] = target
            # the part's merges: each merged session into the part's survivor, in one round
            # after every earlier operation of all of them
            for e in range(nm_k, nm):
                c = mf[e]
                while not alive[c]:
                    c = into[c]
                mi[e] = c
                s = mf[e]
                lo[c] = _imax(lo[c], _imax(last_op[c] + 1, _imax(last_op[s] + 1, lo[s])))
            for e in range(nm_k, nm):
                c = mi[e]
                mr[e] = lo[c]
                last_op[c] = lo[c]
            # the part's rows, into their survivors
            for i in range(bounds[k], bounds[k + 1]):
                c = out[i]
                if c < 0:
                    continue
                while not alive[c]:
                    c = into[c]
                out[i] = c
                rounds[i] = lo[c]
                last_op[c] = lo[c]
            # sessions the rows touched that end by the watermark are emitted now (a first
            # result or an update); emitted ones they reopened are not
            for e in range(ntl):
                s = tl[e]
                if not alive[s]:
                    continue
                end = last[s] + gap
                if end <= w:
                    ev[ne, 0] = 1
                    ev[ne, 1] = s
                    ev[ne, 2] = 2 * gk
                    ev[ne, 3] = start[s]
                    ev[ne, 4] = end
                    ev[ne, 5] = last_op[s]
                    ne += 1
                    if emitted[s]:
                        updates += 1
                    emitted[s] = 1
                    lo[s] = _imax(lo[s], last_op[s] + 1)
                elif emitted[s]:
                    emitted[s] = 0
    ss.n = count
    return merge_from[:nm], merge_into[:nm], merge_round[:nm], events[:ne], updates
