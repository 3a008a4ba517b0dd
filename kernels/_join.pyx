# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Join kernels: build and probe of the stream joins (``heliosdb.operators.join``), over dense
key ids (``_hashagg.GroupTable`` hands them out; ``-1`` is a null key, which never matches).

A join of two row sets known at once (a window that closes) is one ``hash_join`` over their
int64 key code columns: the build rows go into a hash table of their own, the probe rows look
up without inserting.  Otherwise rows have dense key ids, in one of two layouts, arrays
indexed by row number:

- **CSR by key** (``csr_by_key``): rows grouped by key id (sessions that close: ``hash_pairs``);
- **chains** (``chain_link``): per key a linked list through the rows, newest first
  (``head[key]``, ``nxt[row]``), appended as batches arrive, for the joins that probe a
  store which keeps growing (interval, regular and as-of joins: ``chain_pairs``,
  ``asof_pick``).

The loops run ``with nogil`` and emit ``(probe row, stored row)`` pairs as int64 arrays, which
the operator turns into output rows with one Arrow ``take`` per side.  Every function has a
numpy brute-force twin in the tests (``tests/kernels/test_join.py``).
"""
from libc.stdint cimport int64_t, uint8_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memcpy

from _hash cimport hash_row

import numpy as np

cdef int64_t I64_MAX = 0x7FFFFFFFFFFFFFFF
cdef int64_t I64_MIN = -0x7FFFFFFFFFFFFFFF - 1
DEF MAXW = 32


cdef inline bint _same_row(const int64_t** a, int64_t i, const int64_t** b, int64_t j, int w) noexcept nogil:
    cdef int k
    for k in range(w):
        if a[k][i] != b[k][j]:
            return False
    return True


cdef int _columns(list columns, int64_t n, const int64_t** out) except -1:
    cdef int j
    if len(columns) < 1 or len(columns) > MAXW:
        raise ValueError(f"expected 1..{MAXW} key columns, got {len(columns)}")
    for j, a in enumerate(columns):
        if a.dtype != np.int64 or not a.flags.c_contiguous or a.shape[0] != n:
            raise ValueError("key columns must be C-contiguous int64 arrays of the same length")
        out[j] = <const int64_t*> <uintptr_t> a.ctypes.data
    return 0


cdef inline int64_t _sat_add(int64_t a, int64_t b) noexcept nogil:
    """``a + b`` clamped to int64."""
    if b > 0 and a > I64_MAX - b:
        return I64_MAX
    if b < 0 and a < I64_MIN - b:
        return I64_MIN
    return a + b


def sat_add(int64_t a, int64_t b) -> int:
    """``a + b`` clamped to the int64 range (times near its ends plus an interval bound).

    >>> sat_add(2**63 - 2, 5), sat_add(-2**63, -1), sat_add(3, 4)
    (9223372036854775807, -9223372036854775808, 7)
    """
    return _sat_add(a, b)


def csr_by_key(const int64_t[::1] kid, int64_t n_keys):
    """Rows grouped by key id (a counting sort, stable): ``(offsets int64[n_keys + 1], rows)``;
    the rows of key ``k`` are ``rows[offsets[k]:offsets[k + 1]]`` in their order.  Rows with
    key ``-1`` (null) are left out.

    >>> import numpy as np
    >>> off, rows = csr_by_key(np.array([1, 0, -1, 1], np.int64), 2)
    >>> off.tolist(), rows.tolist()
    ([0, 1, 3], [1, 0, 3])
    """
    cdef int64_t n = kid.shape[0], i, k, bad = -1
    offsets = np.zeros(n_keys + 1, np.int64)
    cdef int64_t[::1] off = offsets
    with nogil:
        for i in range(n):
            k = kid[i]
            if k >= n_keys or k < -1:
                bad = i
                break
            if k >= 0:
                off[k + 1] += 1
        if bad < 0:
            for k in range(n_keys):
                off[k + 1] += off[k]
    if bad >= 0:
        raise IndexError(f"key id {kid[bad]} of row {bad} is outside 0..{n_keys - 1} (or -1)")
    rows = np.empty(off[n_keys], np.int64)
    cdef int64_t[::1] r = rows
    fill = offsets[:-1].copy()
    cdef int64_t[::1] f = fill
    with nogil:
        for i in range(n):
            k = kid[i]
            if k >= 0:
                r[f[k]] = i
                f[k] += 1
    return offsets, rows


def hash_pairs(const int64_t[::1] probe_kid, const int64_t[::1] offsets, const int64_t[::1] rows,
               uint8_t[::1] probe_matched, uint8_t[::1] build_matched):
    """Every pair of a probe row and a build row with the same key id: the build side is
    grouped by ``csr_by_key``; returns ``(probe rows, build rows)`` in probe order (then build
    order).  Marks ``probe_matched[i] = 1`` and ``build_matched[j] = 1`` for the rows that
    found a partner (pass zero-length arrays to skip).

    >>> import numpy as np
    >>> off, rows = csr_by_key(np.array([0, 1, 0], np.int64), 3)
    >>> pm, bm = np.zeros(3, np.uint8), np.zeros(3, np.uint8)
    >>> p, b = hash_pairs(np.array([0, 2, -1], np.int64), off, rows, pm, bm)
    >>> p.tolist(), b.tolist(), pm.tolist(), bm.tolist()
    ([0, 0], [0, 2], [1, 0, 0], [1, 0, 1])
    """
    cdef int64_t n = probe_kid.shape[0], n_keys = offsets.shape[0] - 1
    cdef int64_t i, k, a, b, j, total = 0, at = 0
    cdef bint mark_p = probe_matched.shape[0] > 0, mark_b = build_matched.shape[0] > 0
    if mark_p and probe_matched.shape[0] < n:
        raise ValueError("probe_matched is shorter than the probe rows")
    with nogil:
        for i in range(n):
            k = probe_kid[i]
            if 0 <= k < n_keys:
                total += offsets[k + 1] - offsets[k]
    pi = np.empty(total, np.int64)
    bi = np.empty(total, np.int64)
    cdef int64_t[::1] po = pi, bo = bi
    with nogil:
        for i in range(n):
            k = probe_kid[i]
            if k < 0 or k >= n_keys:
                continue
            a = offsets[k]
            b = offsets[k + 1]
            if a == b:
                continue
            if mark_p:
                probe_matched[i] = 1
            for j in range(a, b):
                po[at] = i
                bo[at] = rows[j]
                if mark_b:
                    build_matched[rows[j]] = 1
                at += 1
    return pi, bi


def chain_link(const int64_t[::1] kid, int64_t base, int64_t[::1] head, int64_t[::1] nxt):
    """Link rows ``base .. base + n - 1`` (key ids ``kid``) into their keys' chains, newest
    first: ``nxt[row] = head[k]; head[k] = row``.  Rows with key ``-1`` get ``nxt = -1`` and
    join no chain.  ``head`` must cover every key id, ``nxt`` every row.

    >>> import numpy as np
    >>> head, nxt = np.full(2, -1, np.int64), np.full(4, -1, np.int64)
    >>> chain_link(np.array([1, 1, -1, 0], np.int64), 0, head, nxt)
    >>> head.tolist(), nxt.tolist()
    ([3, 1], [-1, 0, -1, -1])
    """
    cdef int64_t n = kid.shape[0], i, k, row, nk = head.shape[0], bad = -1
    if base < 0 or base + n > nxt.shape[0]:
        raise IndexError(f"rows {base}..{base + n - 1} do not fit nxt of {nxt.shape[0]}")
    with nogil:
        for i in range(n):
            if kid[i] >= nk:
                bad = i
                break
        if bad < 0:
            for i in range(n):
                k = kid[i]
                row = base + i
                if k < 0:
                    nxt[row] = -1
                    continue
                nxt[row] = head[k]
                head[k] = row
    if bad >= 0:
        raise IndexError(f"key id {kid[bad]} is outside head (of {nk} keys)")


cdef struct PairBuf:
    int64_t* a
    int64_t* b
    int64_t n
    int64_t cap


cdef inline bint _push(PairBuf* p, int64_t x, int64_t y) noexcept nogil:
    cdef int64_t* na
    cdef int64_t* nb
    cdef int64_t cap
    if p.n == p.cap:
        cap = p.cap * 2 if p.cap else 1024
        na = <int64_t*> realloc(p.a, cap * sizeof(int64_t))
        if na == NULL:
            return False
        p.a = na
        nb = <int64_t*> realloc(p.b, cap * sizeof(int64_t))
        if nb == NULL:
            return False
        p.b = nb
        p.cap = cap
    p.a[p.n] = x
    p.b[p.n] = y
    p.n += 1
    return True


cdef object _arrays(PairBuf* p):
    a = np.empty(p.n, np.int64)
    b = np.empty(p.n, np.int64)
    cdef int64_t[::1] av = a, bv = b
    if p.n:
        memcpy(&av[0], p.a, p.n * sizeof(int64_t))
        memcpy(&bv[0], p.b, p.n * sizeof(int64_t))
    free(p.a)
    free(p.b)
    p.a = NULL
    p.b = NULL
    return a, b


def chain_pairs(const int64_t[::1] probe_kid, const int64_t[::1] probe_t, int64_t lo, int64_t hi,
                bint check_time, const int64_t[::1] head, const int64_t[::1] nxt,
                const int64_t[::1] stored_t, const uint8_t[::1] stored_alive,
                uint8_t[::1] probe_matched, uint8_t[::1] stored_matched):
    """Pairs of a probe row ``i`` and a live stored row ``j`` of the same key (walking the
    key's chain), with ``probe_t[i] + lo <= stored_t[j] <= probe_t[i] + hi`` when
    ``check_time`` (bounds clamped to int64); returns ``(probe rows, stored rows)``, per probe
    row newest stored row first.  Marks the rows that found a partner in ``probe_matched``
    and ``stored_matched`` (zero-length arrays: not marked).

    >>> import numpy as np
    >>> head, nxt = np.full(1, -1, np.int64), np.full(3, -1, np.int64)
    >>> chain_link(np.zeros(3, np.int64), 0, head, nxt)
    >>> none = np.zeros(0, np.uint8)
    >>> p, s = chain_pairs(np.array([0, -1], np.int64), np.array([10, 10], np.int64), -5, 0, True,
    ...                    head, nxt, np.array([4, 5, 10], np.int64), np.ones(3, np.uint8), none, none)
    >>> p.tolist(), s.tolist()
    ([0, 0], [2, 1])
    """
    cdef int64_t n = probe_kid.shape[0], nk = head.shape[0], i, k, j, t, a, b
    cdef bint mark_p = probe_matched.shape[0] > 0, mark_s = stored_matched.shape[0] > 0
    cdef bint failed = False
    cdef PairBuf buf
    buf.a = NULL
    buf.b = NULL
    buf.n = 0
    buf.cap = 0
    with nogil:
        for i in range(n):
            k = probe_kid[i]
            if k < 0 or k >= nk:
                continue
            j = head[k]
            if check_time:
                t = probe_t[i]
                a = _sat_add(t, lo)
                b = _sat_add(t, hi)
            while j >= 0:
                if stored_alive[j] and (not check_time or (a <= stored_t[j] <= b)):
                    if not _push(&buf, i, j):
                        failed = True
                        break
                    if mark_p:
                        probe_matched[i] = 1
                    if mark_s:
                        stored_matched[j] = 1
                j = nxt[j]
            if failed:
                break
    if failed:
        free(buf.a)
        free(buf.b)
        raise MemoryError(f"chain_pairs: out of memory at {buf.n} pairs")
    return _arrays(&buf)


def asof_pick(const int64_t[::1] probe_kid, const int64_t[::1] probe_t, int64_t tolerance,
              const int64_t[::1] head, const int64_t[::1] nxt, const int64_t[::1] stored_t,
              const uint8_t[::1] stored_alive):
    """For each probe row, the live stored row of its key with the latest time at or before
    the probe's (``stored_t <= probe_t``), ties to the later row (higher row number: it
    arrived later); within ``tolerance`` ns (``probe_t - stored_t <= tolerance``; negative:
    no bound).  Returns int64[n], ``-1`` where there is none.

    >>> import numpy as np
    >>> head, nxt = np.full(1, -1, np.int64), np.full(3, -1, np.int64)
    >>> chain_link(np.zeros(3, np.int64), 0, head, nxt)
    >>> st, alive = np.array([5, 1, 5], np.int64), np.ones(3, np.uint8)
    >>> kid, t = np.array([0, 0, 0, -1], np.int64), np.array([0, 3, 9, 9], np.int64)
    >>> asof_pick(kid, t, -1, head, nxt, st, alive).tolist()
    [-1, 1, 2, -1]
    >>> asof_pick(np.array([0], np.int64), np.array([9], np.int64), 3, head, nxt, st, alive).tolist()
    [-1]
    """
    cdef int64_t n = probe_kid.shape[0], nk = head.shape[0], i, k, j, t, best, bt, s
    out = np.empty(n, np.int64)
    cdef int64_t[::1] o = out
    with nogil:
        for i in range(n):
            k = probe_kid[i]
            best = -1
            if 0 <= k < nk:
                t = probe_t[i]
                bt = I64_MIN
                j = head[k]
                while j >= 0:
                    if stored_alive[j]:
                        s = stored_t[j]
                        if s <= t and (best < 0 or s > bt or (s == bt and j > best)):
                            best = j
                            bt = s
                    j = nxt[j]
                if best >= 0 and tolerance >= 0 and t - bt > tolerance:
                    best = -1
            o[i] = best
    return out


def asof_prune(const int64_t[::1] kid, const int64_t[::1] t, uint8_t[::1] alive, int64_t n,
               int64_t wm, int64_t tolerance, int64_t[::1] best):
    """Versions of an as-of join's right side that no row at or after the watermark ``wm``
    can pick: of each key's live rows with ``t < wm``, all but the latest (ties: the higher
    row), and that one too when it is more than ``tolerance`` before ``wm`` (negative: no
    bound).  Clears their ``alive``; returns how many.  ``best`` is scratch of one int64 per
    key id, all ``-1`` (and left so).

    >>> import numpy as np
    >>> kid, t = np.array([0, 0, 0, 1], np.int64), np.array([1, 4, 9, 2], np.int64)
    >>> alive, best = np.ones(4, np.uint8), np.full(2, -1, np.int64)
    >>> asof_prune(kid, t, alive, 4, 5, -1, best), alive.tolist()
    (1, [0, 1, 1, 1])
    >>> asof_prune(kid, t, alive, 4, 5, 2, best), alive.tolist()
    (1, [0, 1, 1, 0])
    """
    cdef int64_t i, k, b, dropped = 0, nk = best.shape[0]
    if n > kid.shape[0] or n > t.shape[0] or n > alive.shape[0]:
        raise IndexError("n is larger than the row arrays")
    with nogil:
        for i in range(n):
            k = kid[i]
            if not alive[i] or t[i] >= wm or k < 0 or k >= nk:
                continue
            b = best[k]
            if b < 0:
                best[k] = i
            elif t[i] > t[b] or (t[i] == t[b] and i > b):
                alive[b] = 0
                dropped += 1
                best[k] = i
            else:
                alive[i] = 0
                dropped += 1
        for i in range(n):
            k = kid[i]
            if k < 0 or k >= nk:
                continue
            b = best[k]
            if b >= 0:
                if tolerance >= 0 and _sat_add(t[b], tolerance) < wm:
                    alive[b] = 0
                    dropped += 1
                best[k] = -1
    return dropped


def hash_join(list build, build_valid, list probe, probe_valid, uint8_t[::1] probe_matched,
              uint8_t[::1] build_matched):
    """Every pair of a probe row and a build row with equal key tuples (``build`` and ``probe``:
    as many int64 code columns each, e.g. from ``KeyIndex.codes``), skipping rows whose
    ``*_valid`` is 0 (a null key; None: all valid).  The build rows go into a hash table of
    their own (chained per distinct key, in row order); the probe rows look up without
    inserting.  Returns ``(probe rows, build rows)`` in probe order, then build order; marks
    ``*_matched`` like :func:`hash_pairs` (zero-length arrays: not marked).

    >>> import numpy as np
    >>> b = [np.array([1, 2, 1], np.int64), np.array([7, 7, 7], np.int64)]
    >>> p = [np.array([1, 3, 1], np.int64), np.array([7, 7, 7], np.int64)]
    >>> pm, bm = np.zeros(3, np.uint8), np.zeros(3, np.uint8)
    >>> pi, bi = hash_join(b, None, p, np.array([1, 1, 0], np.uint8), pm, bm)
    >>> pi.tolist(), bi.tolist(), pm.tolist(), bm.tolist()
    ([0, 0], [0, 2], [1, 0, 0], [1, 0, 1])
    """
    cdef int w = len(build)
    if len(probe) != w:
        raise ValueError(f"build has {w} key columns, probe {len(probe)}")
    cdef int64_t nb = build[0].shape[0] if w else 0, np_ = probe[0].shape[0] if w else 0
    cdef const int64_t* bc[MAXW]
    cdef const int64_t* pc[MAXW]
    _columns(build, nb, bc)
    _columns(probe, np_, pc)
    cdef const uint8_t[::1] bv, pv
    cdef bint has_bv = build_valid is not None, has_pv = probe_valid is not None
    if has_bv:
        bv = build_valid
    if has_pv:
        pv = probe_valid
    cdef bint mark_p = probe_matched.shape[0] > 0, mark_b = build_matched.shape[0] > 0
    cdef int64_t nslots = 16, i, j, g
    while nslots < 2 * nb:
        nslots *= 2
    cdef uint64_t mask = <uint64_t> (nslots - 1), pos
    cdef int64_t* slots = <int64_t*> malloc(nslots * sizeof(int64_t))
    cdef int64_t* nxt = <int64_t*> malloc((nb + 1) * sizeof(int64_t))
    cdef PairBuf buf
    buf.a = NULL
    buf.b = NULL
    buf.n = 0
    buf.cap = 0
    cdef bint failed = slots == NULL or nxt == NULL
    if not failed:
        with nogil:
            for i in range(nslots):
                slots[i] = -1
            # build, last row first, so each key's chain runs in row order
            for j in range(nb - 1, -1, -1):
                if has_bv and not bv[j]:
                    continue
                pos = hash_row(bc, w, j) & mask
                while True:
                    g = slots[pos]
                    if g < 0:
                        nxt[j] = -1
                        slots[pos] = j
                        break
                    if _same_row(bc, g, bc, j, w):
                        nxt[j] = g
                        slots[pos] = j
                        break
                    pos = (pos + 1) & mask
            for i in range(np_):
                if has_pv and not pv[i]:
                    continue
                pos = hash_row(pc, w, i) & mask
                while True:
                    g = slots[pos]
                    if g < 0 or _same_row(bc, g, pc, i, w):
                        break
                    pos = (pos + 1) & mask
                if g < 0:
                    continue
                if mark_p:
                    probe_matched[i] = 1
                while g >= 0:
                    if not _push(&buf, i, g):
                        failed = True
                        break
                    if mark_b:
                        build_matched[g] = 1
                    g = nxt[g]
                if failed:
                    break
    free(slots)
    free(nxt)
    if failed:
        free(buf.a)
        free(buf.b)
        raise MemoryError(f"hash_join: out of memory at {buf.n} pairs")
    return _arrays(&buf)
