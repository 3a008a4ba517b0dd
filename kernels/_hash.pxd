# cython: language_level=3
"""Hash mixing shared by the hash-table kernels (``_hashagg``, ``_join``, ``_lookup``): one
definition, inlined where it is cimported (``from _hash cimport mix64, hash_combine,
hash_row``: an absolute cimport, found through ``setup.py``'s ``include_path=["kernels"]``,
since the extensions are named ``heliosdb.kernels.*`` but built from ``kernels/``).  Nothing
here exists at run time: a ``.pxd`` of inline functions only.

- ``mix64``: the murmur3 / splitmix64 finaliser (every bit of the input moves every bit of
  the output), so ``mix64(k) & mask`` spreads dense and strided keys over the slots;
- ``hash_combine``: folds one more 64-bit word into a running hash (boost's
  ``hash_combine`` with the golden-ratio constant, then ``mix64``);
- ``hash_row``: row ``i`` of ``w`` int64 key columns; one column is ``mix64`` of its value.
"""
from libc.stdint cimport int64_t, uint64_t


cdef inline uint64_t mix64(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h


cdef inline uint64_t hash_combine(uint64_t h, uint64_t v) noexcept nogil:
    return mix64(h ^ (v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2)))


cdef inline uint64_t hash_row(const int64_t** cols, int w, int64_t i) noexcept nogil:
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL
    cdef int j
    if w == 1:
        return mix64(<uint64_t> cols[0][i])
    for j in range(w):
        h = hash_combine(h, <uint64_t> cols[j][i])
    return h
