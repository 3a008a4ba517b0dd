# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Hash table from fixed-width int64 key tuples to dense group ids, and grouped accumulators.

``GroupTable`` maps a row's key tuple (window start, key codes ..., null bits) to a dense group
id 0, 1, 2, ... in insertion order; accumulators are plain arrays indexed by group id, so the
table and the accumulators are separate (as in DataFusion's GroupsAccumulator).  The loops run
``with nogil``.  Keys are never hashed through Python objects.
"""
from libc.stdint cimport int64_t, uint64_t, int32_t, uint8_t, uintptr_t
from libc.string cimport memcpy, memcmp
from libc.stdlib cimport malloc, calloc, realloc, free

from _hash cimport hash_combine, mix64

import numpy as np

DEF MAXW = 32


cdef class GroupTable:
    """Open-addressing hash table: int64 key tuples of ``width`` -> dense group ids.

    Storage is C memory that grows inside the nogil loop, so the table stays sized by the number
    of groups (and cache-resident for typical key counts), not by the batch size.
    """

    cdef public int width
    cdef int64_t n_groups_
    cdef int64_t* keys        # [key_cap * width], row-major
    cdef int64_t key_cap
    cdef int32_t* slots       # group id + 1, 0 = empty
    cdef uint64_t mask
    cdef int64_t grow_at      # n_groups at which slots double (load factor 1/2)
    cdef bint oom

    def __cinit__(self, int width, int64_t capacity=1024):
        if width < 1 or width > MAXW:
            raise ValueError(f"key width must be 1..{MAXW}, got {width}")
        self.width = width
        self.n_groups_ = 0
        self.keys = NULL
        self.slots = NULL
        if capacity < 16:
            capacity = 16
        self.key_cap = capacity
        self.keys = <int64_t*> malloc(capacity * width * sizeof(int64_t))
        cdef int64_t nslots = 32
        while nslots < 2 * capacity:
            nslots *= 2
        self.slots = <int32_t*> calloc(nslots, sizeof(int32_t))
        if self.keys == NULL or self.slots == NULL:
            raise MemoryError("GroupTable: out of memory")
        self.mask = <uint64_t> (nslots - 1)
        self.grow_at = nslots // 2

    def __dealloc__(self):
        free(self.keys)
        free(self.slots)

    @property
    def n_groups(self) -> int:
        return self.n_groups_

    @property
    def nbytes(self) -> int:
        return self.key_cap * self.width * 8 + (<int64_t> self.mask + 1) * 4

    def keys_view(self):
        """A copy of the key tuples of groups 0..n_groups-1, as int64[n_groups, width]."""
        out = np.empty((self.n_groups_, self.width), dtype=np.int64)
        cdef int64_t[:, ::1] o = out
        if self.n_groups_:
            memcpy(&o[0, 0], self.keys, self.n_groups_ * self.width * sizeof(int64_t))
        return out

    def keys_slice(self, int64_t start, int64_t stop):
        """A copy of the key tuples of groups ``start..stop-1``, as int64[stop - start, width]
        (only those rows are copied, not the whole table)."""
        if start < 0 or stop > self.n_groups_ or start > stop:
            raise IndexError(f"groups {start}..{stop} out of range (table has {self.n_groups_})")
        out = np.empty((stop - start, self.width), dtype=np.int64)
        cdef int64_t[:, ::1] o = out
        if stop > start:
            with nogil:
                memcpy(&o[0, 0], self.keys + start * self.width, (stop - start) * self.width * sizeof(int64_t))
        return out

    def gather_keys(self, const int64_t[::1] ids):
        """The key tuples of groups ``ids`` (in that order), as int64[len(ids), width]: a
        gather of just those rows (``keys_view()[ids]`` would copy the whole table first)."""
        cdef int64_t m = ids.shape[0], i, g, w = self.width
        cdef bint bad = False
        out = np.empty((m, w), dtype=np.int64)
        cdef int64_t[:, ::1] o = out
        with nogil:
            for i in range(m):
                g = ids[i]
                if g < 0 or g >= self.n_groups_:
                    bad = True
                    break
                memcpy(&o[i, 0], self.keys + g * w, w * sizeof(int64_t))
        if bad:
            raise IndexError(f"group id out of range (table has {self.n_groups_} groups)")
        return out

    def copy_keys_into(self, int64_t[::1] out):
        """Copy the key tuples of all groups, row-major, into the front of ``out`` (int64, at
        least ``n_groups * width`` long; e.g. a reused snapshot buffer, so nothing is
        allocated).  Returns ``n_groups``."""
        cdef int64_t need = self.n_groups_ * self.width
        if out.shape[0] < need:
            raise ValueError(f"buffer holds {out.shape[0]} int64, the keys need {need}")
        if need:
            with nogil:
                memcpy(&out[0], self.keys, need * sizeof(int64_t))
        return self.n_groups_

    cdef inline uint64_t _hash_ptr(self, const int64_t* k) noexcept nogil:
        cdef uint64_t h
        cdef int j
        if self.width == 1:
            return mix64(<uint64_t> k[0])
        if self.width == 2:
            return mix64(<uint64_t> k[0] * 0x9E3779B97F4A7C15ULL + <uint64_t> k[1])
        h = 0x9E3779B97F4A7C15ULL
        for j in range(self.width):
            h = hash_combine(h, <uint64_t> k[j])
        return h

    cdef void _rehash(self) noexcept nogil:
        cdef int64_t g
        cdef uint64_t pos
        for g in range(self.n_groups_):
            pos = self._hash_ptr(self.keys + g * self.width) & self.mask
            while self.slots[pos] != 0:
                pos = (pos + 1) & self.mask
            self.slots[pos] = <int32_t> (g + 1)

    cdef bint _resize_slots(self, int64_t nslots) noexcept nogil:
        cdef int32_t* s = <int32_t*> calloc(nslots, sizeof(int32_t))
        if s == NULL:
            return False
        free(self.slots)
        self.slots = s
        self.mask = <uint64_t> (nslots - 1)
        self.grow_at = nslots // 2
        self._rehash()
        return True

    cdef inline int64_t _new_group(self, const int64_t* k) noexcept nogil:
        """Append key tuple ``k`` as a new group (growing storage); -1 if out of memory."""
        cdef int64_t g = self.n_groups_
        cdef int64_t* nk
        if g >= self.key_cap:
            nk = <int64_t*> realloc(self.keys, 2 * self.key_cap * self.width * sizeof(int64_t))
            if nk == NULL:
                return -1
            self.keys = nk
            self.key_cap *= 2
        memcpy(self.keys + g * self.width, k, self.width * sizeof(int64_t))
        self.n_groups_ = g + 1
        return g

    cdef inline int64_t _find_or_add(self, const int64_t* k) noexcept nogil:
        cdef uint64_t pos = self._hash_ptr(k) & self.mask
        cdef int32_t s
        cdef int64_t g
        cdef int64_t* kp
        cdef int j
        cdef bint same
        while True:
            s = self.slots[pos]
            if s == 0:
                g = self._new_group(k)
                if g < 0:
                    return -1
                self.slots[pos] = <int32_t> (g + 1)
                if self.n_groups_ >= self.grow_at:
                    if not self._resize_slots(2 * (<int64_t> self.mask + 1)):
                        return -1
                return g
            g = s - 1
            kp = self.keys + g * self.width
            same = True
            for j in range(self.width):
                if kp[j] != k[j]:
                    same = False
                    break
            if same:
                return g
            pos = (pos + 1) & self.mask

    cdef bint _insert1(self, const int64_t* c0, int64_t n, int64_t[::1] out) noexcept nogil:
        """The width-1 loop with the hash and compare inlined; True if out of memory."""
        cdef int64_t i, g, k0
        cdef uint64_t pos
        cdef int32_t s
        for i in range(n):
            k0 = c0[i]
            pos = mix64(<uint64_t> k0) & self.mask
            while True:
                s = self.slots[pos]
                if s == 0:
                    g = self._find_or_add(&k0)
                    if g < 0:
                        return True
                    break
                g = s - 1
                if self.keys[g] == k0:
                    break
                pos = (pos + 1) & self.mask
            out[i] = g
        return False

    cdef bint _insert2(self, const int64_t* c0, const int64_t* c1, int64_t n,
                       int64_t[::1] out) noexcept nogil:
        """The width-2 loop with the hash and compare inlined; True if out of memory."""
        cdef int64_t i, g
        cdef int64_t k[2]
        cdef uint64_t pos
        cdef int32_t s
        cdef int64_t* kp
        for i in range(n):
            k[0] = c0[i]
            k[1] = c1[i]
            pos = mix64(<uint64_t> k[0] * 0x9E3779B97F4A7C15ULL + <uint64_t> k[1]) & self.mask
            while True:
                s = self.slots[pos]
                if s == 0:
                    g = self._find_or_add(k)
                    if g < 0:
                        return True
                    break
                g = s - 1
                kp = self.keys + 2 * g
                if kp[0] == k[0] and kp[1] == k[1]:
                    break
                pos = (pos + 1) & self.mask
            out[i] = g
        return False

    def insert(self, list columns, int64_t[::1] out):
        """Assign a group id to every row; new key tuples get the next ids.

        ``columns`` holds ``width`` C-contiguous int64 arrays of equal length n; ``out`` (int64[n])
        receives the group ids.  Returns the number of new groups.
        """
        cdef int w = self.width
        cdef int64_t n = out.shape[0]
        cdef const int64_t* cols[MAXW]
        cdef int64_t buf[MAXW]
        cdef int j
        cdef int64_t i, g
        cdef bint failed = False
        if len(columns) != w:
            raise ValueError(f"expected {w} key columns, got {len(columns)}")
        for j in range(w):
            a = columns[j]
            if a.dtype != np.int64 or not a.flags.c_contiguous or a.shape[0] != n:
                raise ValueError("key columns must be C-contiguous int64 arrays of the same length")
            cols[j] = <const int64_t*> <uintptr_t> a.ctypes.data
        if self.n_groups_ + n > 2_000_000_000:
            raise OverflowError("more than 2e9 groups in one operator")
        cdef int64_t before = self.n_groups_
        with nogil:
            if w == 1:
                failed = self._insert1(cols[0], n, out)
            elif w == 2:
                failed = self._insert2(cols[0], cols[1], n, out)
            else:
                for i in range(n):
                    for j in range(w):
                        buf[j] = cols[j][i]
                    g = self._find_or_add(buf)
                    if g < 0:
                        failed = True
                        break
                    out[i] = g
        if failed:
            raise MemoryError(f"GroupTable: out of memory at {self.n_groups_} groups")
        return self.n_groups_ - before

    def compact(self, int64_t[::1] keep):
        """Keep only the groups in ``keep`` (ascending ids); group ``keep[i]`` becomes ``i``."""
        cdef int64_t m = keep.shape[0]
        cdef int64_t i, j, w = self.width
        cdef int64_t prev = -1
        cdef int64_t nslots = 32
        cdef bint failed = False
        for i in range(m):
            if keep[i] <= prev or keep[i] >= self.n_groups_:
                raise ValueError("keep must hold ascending, existing group ids")
            prev = keep[i]
        while nslots < 2 * m + 2:
            nslots *= 2
        with nogil:
            for i in range(m):
                if keep[i] != i:
                    for j in range(w):
                        self.keys[i * w + j] = self.keys[keep[i] * w + j]
            self.n_groups_ = m
            if not self._resize_slots(nslots):
                failed = True
        if failed:
            raise MemoryError("GroupTable.compact: out of memory")

    def widen(self, int64_t fill):
        """A new table with one more key column, set to ``fill`` for the existing groups."""
        cdef GroupTable t = GroupTable(self.width + 1, max(self.n_groups_, 16))
        cdef int64_t g
        cdef int j
        cdef int64_t buf[MAXW]
        with nogil:
            for g in range(self.n_groups_):
                for j in range(self.width):
                    buf[j] = self.keys[g * self.width + j]
                buf[self.width] = fill
                t._find_or_add(buf)
        if t.n_groups_ != self.n_groups_:
            raise MemoryError("GroupTable.widen: out of memory")
        return t


def count_rows(const int64_t[::1] gids, int64_t[::1] counts):
    """``counts[g] += 1`` for every row's group id ``g``."""
    cdef int64_t i, n = gids.shape[0]
    with nogil:
        for i in range(n):
            counts[gids[i]] += 1


def count_valid(const int64_t[::1] gids, const uint8_t[::1] valid, int64_t[::1] counts):
    """``counts[g] += valid[i]``: per-group count of non-null values."""
    cdef int64_t i, n = gids.shape[0]
    with nogil:
        for i in range(n):
            counts[gids[i]] += valid[i]


def update_f64(const int64_t[::1] gids, const double[::1] values, valid,
               int64_t[::1] nn, int64_t[::1] nan, double[::1] sum_, double[::1] mn, double[::1] mx):
    """Fold float64 values into per-group non-null count, NaN count, sum, min and max.

    ``valid`` is a uint8 array (1 = not null) or None.  min and max skip NaN; the NaN count lets
    the caller give NaN where every value was NaN (min) or any was (max), as SQL does.
    """
    cdef int64_t i, g, n = gids.shape[0]
    cdef double v, m
    cdef const uint8_t[::1] ok
    if valid is None:
        with nogil:
            for i in range(n):
                g = gids[i]
                v = values[i]
                nn[g] += 1
                sum_[g] += v
                m = mn[g]
                mn[g] = v if v < m else m      # branch-free (minsd/cmov): few rows per group
                m = mx[g]
                mx[g] = v if v > m else m
                if v != v:
                    nan[g] += 1
    else:
        ok = valid
        with nogil:
            for i in range(n):
                if ok[i]:
                    g = gids[i]
                    v = values[i]
                    nn[g] += 1
                    sum_[g] += v
                    m = mn[g]
                    mn[g] = v if v < m else m
                    m = mx[g]
                    mx[g] = v if v > m else m
                    if v != v:
                        nan[g] += 1


def update_i64(const int64_t[::1] gids, const int64_t[::1] values, valid,
               int64_t[::1] nn, int64_t[::1] sum_, int64_t[::1] mn, int64_t[::1] mx):
    """Fold int64 values into per-group non-null count, sum (wrapping), min and max."""
    cdef int64_t i, g, n = gids.shape[0]
    cdef int64_t v, m
    cdef const uint8_t[::1] ok
    if valid is None:
        with nogil:
            for i in range(n):
                g = gids[i]
                v = values[i]
                nn[g] += 1
                sum_[g] = <int64_t> (<uint64_t> sum_[g] + <uint64_t> v)
                m = mn[g]
                mn[g] = v if v < m else m
                m = mx[g]
                mx[g] = v if v > m else m
    else:
        ok = valid
        with nogil:
            for i in range(n):
                if ok[i]:
                    g = gids[i]
                    v = values[i]
                    nn[g] += 1
                    sum_[g] = <int64_t> (<uint64_t> sum_[g] + <uint64_t> v)
                    m = mn[g]
                    mn[g] = v if v < m else m
                    m = mx[g]
                    mx[g] = v if v > m else m


# -- strings -> dense ids -------------------------------------------------------------------------
cdef inline uint64_t _hash_bytes(const uint8_t* p, int64_t n) noexcept nogil:
    cdef uint64_t h = 0xCBF29CE484222325ULL
    cdef int64_t i
    for i in range(n):
        h = (h ^ p[i]) * 0x100000001B3ULL
    return mix64(h ^ <uint64_t> n)


cdef class StringTable:
    """Open-addressing hash table: byte strings (Arrow string values) -> dense ids 0, 1, 2, ...

    The bytes of every distinct string are kept once, in insertion order, so the table can
    give its values back as an Arrow array (``values()``) to decode ids.
    """

    cdef uint8_t* data
    cdef int64_t data_len, data_cap
    cdef int64_t* offs          # offs[id] .. offs[id + 1] delimit string id; offs[0] = 0
    cdef uint64_t* hashes
    cdef int64_t n_, cap
    cdef int32_t* slots
    cdef uint64_t mask
    cdef int64_t grow_at

    def __cinit__(self):
        self.data_cap = 4096
        self.cap = 1024
        self.data = <uint8_t*> malloc(self.data_cap)
        self.offs = <int64_t*> malloc((self.cap + 1) * sizeof(int64_t))
        self.hashes = <uint64_t*> malloc(self.cap * sizeof(uint64_t))
        self.slots = <int32_t*> calloc(2048, sizeof(int32_t))
        if self.data == NULL or self.offs == NULL or self.hashes == NULL or self.slots == NULL:
            raise MemoryError("StringTable: out of memory")
        self.offs[0] = 0
        self.n_ = 0
        self.data_len = 0
        self.mask = 2047
        self.grow_at = 1024

    def __dealloc__(self):
        free(self.data)
        free(self.offs)
        free(self.hashes)
        free(self.slots)

    def __len__(self) -> int:
        return self.n_

    @property
    def nbytes(self) -> int:
        return self.data_cap + (self.cap + 1) * 8 + self.cap * 8 + (<int64_t> self.mask + 1) * 4

    cdef bint _grow_slots(self) noexcept nogil:
        cdef int64_t nslots = 2 * (<int64_t> self.mask + 1)
        cdef int32_t* s = <int32_t*> calloc(nslots, sizeof(int32_t))
        cdef int64_t g
        cdef uint64_t pos
        if s == NULL:
            return False
        free(self.slots)
        self.slots = s
        self.mask = <uint64_t> (nslots - 1)
        self.grow_at = nslots // 2
        for g in range(self.n_):
            pos = self.hashes[g] & self.mask
            while self.slots[pos] != 0:
                pos = (pos + 1) & self.mask
            self.slots[pos] = <int32_t> (g + 1)
        return True

    cdef int64_t _add(self, const uint8_t* p, int64_t n, uint64_t h, uint64_t pos) noexcept nogil:
        cdef int64_t g = self.n_
        cdef uint8_t* nd
        cdef int64_t* no
        cdef uint64_t* nh
        cdef int64_t need = self.data_len + n
        if need > self.data_cap:
            while need > self.data_cap:
                self.data_cap *= 2
            nd = <uint8_t*> realloc(self.data, self.data_cap)
            if nd == NULL:
                return -1
            self.data = nd
        if g >= self.cap:
            no = <int64_t*> realloc(self.offs, (2 * self.cap + 1) * sizeof(int64_t))
            if no == NULL:
                return -1
            self.offs = no
            nh = <uint64_t*> realloc(self.hashes, 2 * self.cap * sizeof(uint64_t))
            if nh == NULL:
                return -1
            self.hashes = nh
            self.cap *= 2
        if n:
            memcpy(self.data + self.data_len, p, n)
        self.data_len += n
        self.offs[g + 1] = self.data_len
        self.hashes[g] = h
        self.slots[pos] = <int32_t> (g + 1)
        self.n_ = g + 1
        if self.n_ >= self.grow_at:
            if not self._grow_slots():
                return -1
        return g

    def encode(self, const int64_t[::1] offsets, const uint8_t[::1] data, int64_t[::1] out):
        """Ids of strings ``data[offsets[i]:offsets[i+1]]`` into ``out`` (new ones appended)."""
        cdef int64_t n = out.shape[0]
        cdef int64_t i, g, a, b, ln
        cdef uint64_t h, pos
        cdef int32_t s
        cdef const uint8_t* base = &data[0] if data.shape[0] else NULL
        cdef bint failed = False
        if offsets.shape[0] != n + 1:
            raise ValueError("offsets must have one more entry than out")
        if n and (offsets[0] < 0 or offsets[n] > data.shape[0]):
            raise ValueError("offsets point outside data")
        with nogil:
            for i in range(n):
                a = offsets[i]
                b = offsets[i + 1]
                ln = b - a
                h = _hash_bytes(base + a, ln)
                pos = h & self.mask
                while True:
                    s = self.slots[pos]
                    if s == 0:
                        g = self._add(base + a, ln, h, pos)
                        if g < 0:
                            failed = True
                        break
                    g = s - 1
                    if (self.hashes[g] == h and self.offs[g + 1] - self.offs[g] == ln
                            and (ln == 0 or memcmp(self.data + self.offs[g], base + a, ln) == 0)):
                        break
                    pos = (pos + 1) & self.mask
                if failed:
                    break
                out[i] = g
        if failed:
            raise MemoryError(f"StringTable: out of memory at {self.n_} strings")

    def values(self):
        """(offsets int64[n+1], data bytes) of the strings in id order: pa.large_string buffers."""
        offs = np.empty(self.n_ + 1, dtype=np.int64)
        cdef int64_t[::1] o = offs
        memcpy(&o[0], self.offs, (self.n_ + 1) * sizeof(int64_t))
        return offs, bytes((<char*> self.data)[: self.data_len]) if self.data_len else b""
