# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The lookup join's index: a table's key tuples -> its rows, built once, probed per batch.

``JoinIndex`` is built from a table's key columns as int64 codes (integers as themselves,
strings as ids from a ``StringIndex``, see ``heliosdb/operators/lookup.py``): key tuple ->
dense group id -> the group's rows (CSR: ``starts``, ``rows``, in table order).  A probe maps
every row of a batch to its matches and returns the (left row, right row) pairs the output is
taken with.  Three layouts, chosen at build:

- *direct*: one key column whose values span a range at most a few times the number of keys
  (dense ids, the common dimension table): ``direct[key - min]``, one memory access;
- *hash1*: one key column otherwise: open addressing over (key, value) slots, one cache line
  per probe;
- *wide*: several key columns: open addressing over group ids, a per-group hash to skip most
  tuple comparisons.

When every key of one column occurs once, slots hold the row itself (no CSR step).  An index is read-only
once built, so the replicas of a join probe one index from several threads.  Every loop runs
``with nogil``; keys are never Python objects.
"""
from libc.stdint cimport int64_t, uint64_t, int32_t, uint8_t, uintptr_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memcmp

from _hash cimport hash_row, mix64

cdef extern from *:
    void __builtin_prefetch(const void* p) noexcept nogil

import numpy as np

DEF MAXW = 32
DEF AHEAD = 16           # rows a probe prefetches ahead

ctypedef fused offset_t:
    int32_t
    int64_t


cdef struct Slot1:
    int64_t key
    int64_t val         # -1: empty


cdef int64_t _pow2_slots(int64_t n) noexcept nogil:
    cdef int64_t s = 16
    while s < 2 * n:
        s *= 2
    return s


cdef int _columns(list columns, int width, int64_t n, const int64_t** out) except -1:
    cdef int j
    if len(columns) != width:
        raise ValueError(f"expected {width} key columns, got {len(columns)}")
    for j in range(width):
        a = columns[j]
        if a.dtype != np.int64 or not a.flags.c_contiguous or a.shape[0] != n:
            raise ValueError("key columns must be C-contiguous int64 arrays of the same length")
        out[j] = <const int64_t*> <uintptr_t> a.ctypes.data
    return 0


cdef const uint8_t* _valid(object valid, int64_t n) except? NULL:
    if valid is None:
        return NULL
    if valid.dtype != np.uint8 or not valid.flags.c_contiguous or valid.shape[0] != n:
        raise ValueError("valid must be a C-contiguous uint8 array as long as the key columns")
    if n == 0:
        return NULL
    return <const uint8_t*> <uintptr_t> valid.ctypes.data


cdef class JoinIndex:
    """Key tuples of a table (``width`` int64 code columns) -> the table's rows.

    ``JoinIndex(columns, valid)``: ``columns`` holds ``width`` C-contiguous int64 arrays of
    the table's rows; ``valid`` (uint8, or None: all) marks rows whose key has no null (the
    others are never matched, as in SQL).
    """

    cdef readonly int width
    cdef readonly int64_t n_rows         # rows of the table
    cdef readonly int64_t n_keyed        # rows with a key (not null): the indexed ones
    cdef readonly int64_t n_groups       # distinct keys
    cdef readonly bint unique            # every key occurs once: slots hold rows
    cdef readonly str layout             # "direct", "hash1" or "wide"
    cdef int mode                        # 0 direct, 1 hash1, 2 wide
    cdef bint slot_rows                  # slots hold rows (unique keys, one column)
    cdef int64_t kmin
    cdef uint64_t krange
    cdef int32_t* direct                 # [krange]: value or -1
    cdef Slot1* slots1                   # [mask + 1]
    cdef int32_t* slotsw                 # [mask + 1]: group id or -1
    cdef uint64_t* ghash                 # [n_groups]
    cdef int64_t* gkeys                  # [n_groups * width]
    cdef uint64_t mask
    cdef int64_t* starts                 # [n_groups + 1]
    cdef int64_t* rows                   # [n_keyed]

    def __cinit__(self, list columns, valid=None):
        self.direct = NULL
        self.slots1 = NULL
        self.slotsw = NULL
        self.ghash = NULL
        self.gkeys = NULL
        self.starts = NULL
        self.rows = NULL
        cdef int w = len(columns)
        if w < 1 or w > MAXW:
            raise ValueError(f"a join key has 1..{MAXW} columns, got {w}")
        self.width = w
        cdef int64_t n = columns[0].shape[0]
        if n >= 2**31:
            raise OverflowError(f"a lookup table holds fewer than 2**31 rows, got {n}")
        self.n_rows = n
        cdef const int64_t* cols[MAXW]
        _columns(columns, w, n, cols)
        cdef const uint8_t* ok = _valid(valid, n)
        gid_arr = np.empty(max(n, 1), dtype=np.int64)
        cdef int64_t[::1] gid = gid_arr
        cdef bint failed = False
        with nogil:
            failed = self._assign(cols, ok, n, &gid[0])
            if not failed:
                failed = self._group_rows(&gid[0], n)
            if not failed and self.unique and self.mode != 2:
                self._slots_to_rows()
                self.slot_rows = True
        if failed:
            raise MemoryError(f"JoinIndex: out of memory indexing {n} rows")
        self.layout = ("direct", "hash1", "wide")[self.mode]

    def __dealloc__(self):
        free(self.direct)
        free(self.slots1)
        free(self.slotsw)
        free(self.ghash)
        free(self.gkeys)
        free(self.starts)
        free(self.rows)

    @property
    def nbytes(self) -> int:
        """Bytes of C memory the index holds."""
        cdef int64_t b = (self.n_groups + 1) * 8 + self.n_keyed * 8
        if self.mode == 0:
            b += <int64_t> self.krange * 4
        elif self.mode == 1:
            b += (<int64_t> self.mask + 1) * sizeof(Slot1)
        else:
            b += (<int64_t> self.mask + 1) * 4 + self.n_groups * (8 + 8 * self.width)
        return b

    # -- build ------------------------------------------------------------------------------
    cdef bint _assign(self, const int64_t** cols, const uint8_t* ok, int64_t n, int64_t* gid) noexcept nogil:
        """Group id of every row (-1: null key), choosing the layout; True if out of memory."""
        cdef int64_t i, keyed = 0, lo = 0, hi = 0, k, g
        cdef const int64_t* c0 = cols[0]
        cdef bint first = True
        for i in range(n):
            if ok == NULL or ok[i]:
                keyed += 1
                if self.width == 1:
                    k = c0[i]
                    if first:
                        lo = k
                        hi = k
                        first = False
                    elif k < lo:
                        lo = k
                    elif k > hi:
                        hi = k
        self.n_keyed = keyed
        self.n_groups = 0
        if self.width == 1 and keyed and <uint64_t> hi - <uint64_t> lo < <uint64_t> (4 * keyed + 1024):
            self.mode = 0
            self.kmin = lo
            self.krange = <uint64_t> hi - <uint64_t> lo + 1
            self.direct = <int32_t*> malloc(self.krange * sizeof(int32_t))
            if self.direct == NULL:
                return True
            for i in range(<int64_t> self.krange):
                self.direct[i] = -1
            for i in range(n):
                if ok != NULL and not ok[i]:
                    gid[i] = -1
                    continue
                k = <int64_t> (<uint64_t> c0[i] - <uint64_t> lo)
                g = self.direct[k]
                if g < 0:
                    g = self.n_groups
                    self.direct[k] = <int32_t> g
                    self.n_groups += 1
                gid[i] = g
            return False
        self.mask = <uint64_t> (_pow2_slots(keyed) - 1)
        if self.width == 1:
            self.mode = 1
            self.slots1 = <Slot1*> malloc((self.mask + 1) * sizeof(Slot1))
            if self.slots1 == NULL:
                return True
            for i in range(<int64_t> self.mask + 1):
                self.slots1[i].val = -1
            for i in range(n):
                if ok != NULL and not ok[i]:
                    gid[i] = -1
                    continue
                gid[i] = self._add1(c0[i])
            return False
        self.mode = 2
        self.slotsw = <int32_t*> malloc((self.mask + 1) * sizeof(int32_t))
        self.ghash = <uint64_t*> malloc(max(keyed, 1) * sizeof(uint64_t))
        self.gkeys = <int64_t*> malloc(max(keyed, 1) * self.width * sizeof(int64_t))
        if self.slotsw == NULL or self.ghash == NULL or self.gkeys == NULL:
            return True
        for i in range(<int64_t> self.mask + 1):
            self.slotsw[i] = -1
        for i in range(n):
            if ok != NULL and not ok[i]:
                gid[i] = -1
                continue
            gid[i] = self._add_wide(cols, i)
        return False

    cdef inline int64_t _add1(self, int64_t k) noexcept nogil:
        cdef uint64_t pos = mix64(<uint64_t> k) & self.mask
        cdef Slot1* s
        while True:
            s = &self.slots1[pos]
            if s.val < 0:
                s.key = k
                s.val = self.n_groups
                self.n_groups += 1
                return s.val
            if s.key == k:
                return s.val
            pos = (pos + 1) & self.mask

    cdef inline int64_t _add_wide(self, const int64_t** cols, int64_t i) noexcept nogil:
        cdef int w = self.width, j
        cdef uint64_t h = hash_row(cols, w, i)
        cdef uint64_t pos = h & self.mask
        cdef int64_t g
        cdef int64_t* kp
        cdef bint same
        while True:
            g = self.slotsw[pos]
            if g < 0:
                g = self.n_groups
                self.slotsw[pos] = <int32_t> g
                self.ghash[g] = h
                kp = self.gkeys + g * w
                for j in range(w):
                    kp[j] = cols[j][i]
                self.n_groups += 1
                return g
            if self.ghash[g] == h:
                kp = self.gkeys + g * w
                same = True
                for j in range(w):
                    if kp[j] != cols[j][i]:
                        same = False
                        break
                if same:
                    return g
            pos = (pos + 1) & self.mask

    cdef bint _group_rows(self, const int64_t* gid, int64_t n) noexcept nogil:
        """CSR of each group's rows, in table order; True if out of memory."""
        cdef int64_t i, g, acc = 0, c
        self.starts = <int64_t*> calloc(self.n_groups + 1, sizeof(int64_t))
        self.rows = <int64_t*> malloc(max(self.n_keyed, 1) * sizeof(int64_t))
        if self.starts == NULL or self.rows == NULL:
            return True
        for i in range(n):
            g = gid[i]
            if g >= 0:
                self.starts[g + 1] += 1
        for g in range(self.n_groups):
            acc += self.starts[g + 1]
            self.starts[g + 1] = acc
        # fill with a moving cursor per group (starts[g] is advanced, then restored)
        for i in range(n):
            g = gid[i]
            if g >= 0:
                c = self.starts[g]
                self.rows[c] = i
                self.starts[g] = c + 1
        for g in range(self.n_groups, 0, -1):
            self.starts[g] = self.starts[g - 1]
        self.starts[0] = 0
        self.unique = self.n_groups == self.n_keyed
        return False

    cdef void _slots_to_rows(self) noexcept nogil:
        """Every key occurs once: let slots hold the row instead of the group."""
        cdef int64_t i, v
        if self.mode == 0:
            for i in range(<int64_t> self.krange):
                v = self.direct[i]
                if v >= 0:
                    self.direct[i] = <int32_t> self.rows[v]
        else:
            for i in range(<int64_t> self.mask + 1):
                v = self.slots1[i].val
                if v >= 0:
                    self.slots1[i].val = self.rows[v]

    # -- probe ------------------------------------------------------------------------------
    cdef inline int64_t _find1(self, int64_t k) noexcept nogil:
        cdef uint64_t d
        cdef uint64_t pos
        cdef Slot1* s
        if self.mode == 0:
            d = <uint64_t> k - <uint64_t> self.kmin
            return self.direct[d] if d < self.krange else -1
        pos = mix64(<uint64_t> k) & self.mask
        while True:
            s = &self.slots1[pos]
            if s.val < 0 or s.key == k:
                return s.val
            pos = (pos + 1) & self.mask

    cdef inline int64_t _find_wide(self, const int64_t** cols, int64_t i) noexcept nogil:
        cdef int w = self.width, j
        cdef uint64_t h = hash_row(cols, w, i)
        cdef uint64_t pos = h & self.mask
        cdef int64_t g
        cdef int64_t* kp
        cdef bint same
        while True:
            g = self.slotsw[pos]
            if g < 0:
                return -1
            if self.ghash[g] == h:
                kp = self.gkeys + g * w
                same = True
                for j in range(w):
                    if kp[j] != cols[j][i]:
                        same = False
                        break
                if same:
                    return g
            pos = (pos + 1) & self.mask

    cdef void _lookup(self, const int64_t** cols, const uint8_t* ok, int64_t n, int64_t* out) noexcept nogil:
        """``out[i]``: the slot value of row ``i`` (a row if ``slot_rows``, else a group; -1: none).
        The slot of row ``i + AHEAD`` is prefetched meanwhile (the index is larger than a cache)."""
        cdef int64_t i, m = n - AHEAD
        cdef const int64_t* c0 = cols[0]
        cdef uint64_t d
        if self.n_keyed == 0:
            for i in range(n):
                out[i] = -1
        elif self.mode == 0:
            for i in range(n):
                if i < m:
                    d = <uint64_t> c0[i + AHEAD] - <uint64_t> self.kmin
                    if d < self.krange:
                        __builtin_prefetch(&self.direct[d])
                out[i] = self._find1(c0[i]) if ok == NULL or ok[i] else -1
        elif self.mode == 1:
            for i in range(n):
                if i < m:
                    __builtin_prefetch(&self.slots1[mix64(<uint64_t> c0[i + AHEAD]) & self.mask])
                out[i] = self._find1(c0[i]) if ok == NULL or ok[i] else -1
        else:
            for i in range(n):
                if i < m:
                    __builtin_prefetch(&self.slotsw[hash_row(cols, self.width, i + AHEAD) & self.mask])
                out[i] = self._find_wide(cols, i) if ok == NULL or ok[i] else -1

    def probe(self, list columns, valid=None, bint keep_unmatched=False):
        """The join of a batch's rows with the table: ``(left, right, unmatched)``.

        ``left[k]``, ``right[k]`` (int64) are the batch row and the table row of output row
        ``k``, each batch row's matches in table order; ``left`` is None when the output is the
        batch's rows in order, each once.  With ``keep_unmatched`` a row without a match is
        kept once with ``right = -1`` (a left join); ``unmatched`` counts those rows.
        """
        cdef int w = self.width
        cdef int64_t n = columns[0].shape[0] if columns else 0
        cdef const int64_t* cols[MAXW]
        _columns(columns, w, n, cols)
        cdef const uint8_t* ok = _valid(valid, n)
        vals_arr = np.empty(n, dtype=np.int64)
        if n == 0:
            return None, vals_arr, 0
        cdef int64_t[::1] vals = vals_arr
        cdef int64_t* v = &vals[0]
        cdef int64_t i, g, r, k = 0, total = 0, missed = 0
        cdef bint multi = False
        cdef int64_t[::1] lo
        cdef int64_t[::1] ro
        with nogil:
            self._lookup(cols, ok, n, v)
            if self.slot_rows:
                for i in range(n):
                    missed += v[i] < 0
            else:
                for i in range(n):
                    g = v[i]
                    if g < 0:
                        missed += 1
                    else:
                        total += self.starts[g + 1] - self.starts[g]
        if self.slot_rows:
            if keep_unmatched or missed == 0:
                return None, vals_arr, missed if keep_unmatched else 0
            left_arr = np.empty(n - missed, dtype=np.int64)
            if n - missed == 0:
                return left_arr, left_arr, 0
            lo = left_arr
            with nogil:
                for i in range(n):
                    r = v[i]
                    if r >= 0:
                        lo[k] = i
                        v[k] = r            # k <= i: compacts in place
                        k += 1
            return left_arr, vals_arr[:k], 0
        if keep_unmatched:
            total += missed
        multi = total != (n if keep_unmatched else n - missed)
        if not multi and (keep_unmatched or missed == 0):
            # each row has at most one match and none is dropped: the right rows in order
            with nogil:
                for i in range(n):
                    g = v[i]
                    if g >= 0:
                        v[i] = self.rows[self.starts[g]]
            return None, vals_arr, missed if keep_unmatched else 0
        left_arr = np.empty(total, dtype=np.int64)
        right_arr = np.empty(total, dtype=np.int64)
        if total == 0:
            return left_arr, right_arr, 0
        lo = left_arr
        ro = right_arr
        with nogil:
            for i in range(n):
                g = v[i]
                if g < 0:
                    if keep_unmatched:
                        lo[k] = i
                        ro[k] = -1
                        k += 1
                    continue
                for r in range(self.starts[g], self.starts[g + 1]):
                    lo[k] = i
                    ro[k] = self.rows[r]
                    k += 1
        return left_arr, right_arr, missed if keep_unmatched else 0


# -- strings -> ids ---------------------------------------------------------------------------
cdef inline uint64_t _hash_bytes(const uint8_t* p, int64_t n) noexcept nogil:
    """8 bytes at a time (the tail zero-padded), then the length, then a finaliser."""
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL, w
    cdef int64_t i = 0
    while i + 8 <= n:
        memcpy(&w, p + i, 8)
        h = (h ^ w) * 0xff51afd7ed558ccdULL
        h ^= h >> 29
        i += 8
    if i < n:
        w = 0
        memcpy(&w, p + i, n - i)
        h = (h ^ w) * 0xff51afd7ed558ccdULL
        h ^= h >> 29
    return mix64(h ^ <uint64_t> n)


DEF INLINE = 16          # bytes of a string kept in its slot: shorter keys compare there


cdef struct SSlot:
    uint64_t hash
    int32_t id             # -1: empty
    int32_t len
    uint8_t head[INLINE]   # the first min(len, INLINE) bytes


cdef class StringIndex:
    """A table's string key column -> ids, for the probes' strings to be found, read-only.

    ``StringIndex(offsets, data, valid)`` indexes the strings ``data[offsets[i]:offsets[i+1]]``
    of the rows with ``valid[i]`` (None: all); ``codes`` holds each row's id: the position of
    the first row with its string (0 for an invalid row), so equal strings have equal ids in
    ``0 .. rows - 1``.  It keeps references to ``offsets`` and ``data``, not copies.  A slot
    holds the hash, the length and the first 16 bytes of its string, so a short key is found
    with one memory access (prefetched ahead: the rows' hashes are computed first).
    ``lookup`` finds a batch's strings (a string not there cannot match).
    """

    cdef const uint8_t* data
    cdef const int64_t* offs
    cdef SSlot* slots
    cdef uint64_t mask
    cdef readonly int64_t n            # rows indexed
    cdef readonly int64_t n_strings    # distinct strings
    cdef readonly object codes
    cdef object _keep

    def __cinit__(self, offsets, data, valid=None):
        self.slots = NULL
        offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        data = np.ascontiguousarray(data, dtype=np.uint8)
        cdef int64_t n = offsets.shape[0] - 1
        if n < 0:
            raise ValueError("offsets must hold at least one entry")
        if n >= 2**31:
            raise OverflowError("a lookup table holds fewer than 2**31 rows")
        cdef const int64_t[::1] o = offsets
        cdef int64_t i
        if n and (o[0] < 0 or o[n] > data.shape[0]):
            raise ValueError("offsets point outside data")
        for i in range(n):
            if o[i + 1] < o[i] or o[i + 1] - o[i] >= 2**31:
                raise ValueError("offsets must ascend, and each string be shorter than 2 GiB")
        cdef const uint8_t* ok = _valid(valid, n)
        self._keep = (offsets, data)
        self.offs = &o[0]
        self.data = <const uint8_t*> <uintptr_t> data.ctypes.data
        self.n = n
        cdef int64_t nslots = _pow2_slots(n)
        self.slots = <SSlot*> malloc(nslots * sizeof(SSlot))
        cdef uint64_t* hs = <uint64_t*> malloc(max(n, 1) * sizeof(uint64_t))
        if self.slots == NULL or hs == NULL:
            free(hs)
            raise MemoryError("StringIndex: out of memory")
        self.mask = <uint64_t> (nslots - 1)
        codes_arr = np.zeros(n, dtype=np.int64)
        self.codes = codes_arr
        cdef int64_t[::1] codes = codes_arr
        cdef int64_t ln, m = n - AHEAD, distinct = 0
        cdef uint64_t h, pos
        cdef SSlot* sl
        cdef const uint8_t* p
        with nogil:
            for i in range(nslots):
                self.slots[i].id = -1
            for i in range(n):
                if ok == NULL or ok[i]:
                    hs[i] = _hash_bytes(self.data + self.offs[i], self.offs[i + 1] - self.offs[i])
            for i in range(n):
                if i < m and (ok == NULL or ok[i + AHEAD]):
                    __builtin_prefetch(&self.slots[hs[i + AHEAD] & self.mask])
                if ok != NULL and not ok[i]:
                    continue
                p = self.data + self.offs[i]
                ln = self.offs[i + 1] - self.offs[i]
                h = hs[i]
                pos = h & self.mask
                while True:
                    sl = &self.slots[pos]
                    if sl.id < 0:
                        sl.id = <int32_t> i
                        sl.hash = h
                        sl.len = <int32_t> ln
                        memcpy(sl.head, p, ln if ln < INLINE else INLINE)
                        distinct += 1
                        codes[i] = i
                        break
                    if self._same(sl, p, ln, h):
                        codes[i] = sl.id
                        break
                    pos = (pos + 1) & self.mask
        free(hs)
        self.n_strings = distinct

    def __dealloc__(self):
        free(self.slots)

    @property
    def nbytes(self) -> int:
        return (self.offs[self.n] if self.n else 0) + (self.n + 1) * 8 + (<int64_t> self.mask + 1) * sizeof(SSlot)

    cdef inline bint _same(self, const SSlot* sl, const uint8_t* p, int64_t ln, uint64_t h) noexcept nogil:
        if sl.hash != h or sl.len != ln:
            return False
        if ln <= INLINE:
            return ln == 0 or memcmp(sl.head, p, ln) == 0
        return memcmp(self.data + self.offs[sl.id], p, ln) == 0

    def lookup(self, const offset_t[::1] offsets, const uint8_t[::1] data, int64_t[::1] out,
               uint8_t[::1] valid):
        """``out[i]``: the id of string ``i`` of a batch (``data[offsets[i]:offsets[i+1]]``) for
        the rows with ``valid[i]``; a string not in the index clears ``valid[i]`` (out 0)."""
        cdef int64_t n = out.shape[0]
        cdef int64_t i, a, ln
        cdef uint64_t h, pos
        cdef SSlot* sl
        if offsets.shape[0] != n + 1 or valid.shape[0] != n:
            raise ValueError("offsets must be one longer than out, valid as long")
        if n and (offsets[0] < 0 or offsets[n] > data.shape[0]):
            raise ValueError("offsets point outside data")
        cdef const uint8_t* base = &data[0] if data.shape[0] else NULL
        cdef uint64_t* hs = <uint64_t*> malloc(max(n, 1) * sizeof(uint64_t))
        if hs == NULL:
            raise MemoryError("StringIndex.lookup: out of memory")
        with nogil:
            for i in range(n):           # hashes first: the probes can then prefetch their slot
                if valid[i]:
                    a = offsets[i]
                    hs[i] = _hash_bytes(base + a, offsets[i + 1] - a)
            for i in range(n):
                if i + AHEAD < n and valid[i + AHEAD]:
                    __builtin_prefetch(&self.slots[hs[i + AHEAD] & self.mask])
                out[i] = 0
                if not valid[i]:
                    continue
                a = offsets[i]
                ln = offsets[i + 1] - a
                h = hs[i]
                pos = h & self.mask
                while True:
                    sl = &self.slots[pos]
                    if sl.id < 0:
                        valid[i] = 0
                        break
                    if self._same(sl, base + a, ln, h):
                        out[i] = sl.id
                        break
                    pos = (pos + 1) & self.mask
        free(hs)
