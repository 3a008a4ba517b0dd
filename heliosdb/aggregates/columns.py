"""Arrow columns <-> the numpy arrays accumulators work on: a batch's inputs (values and
validity), per-group arrays grown with their fill, and snapshot columns read back (in place
when the caller owns the buffers).
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa


def validity(arr: pa.Array) -> Optional[np.ndarray]:
    """uint8 validity of ``arr`` (1: a value), or None when it has no null.

    >>> validity(pa.array([1, None, 3]))
    array([1, 0, 1], dtype=uint8)
    >>> validity(pa.array([1, 2])) is None
    True
    """
    if not arr.null_count:
        return None
    return arr.is_valid().to_numpy(zero_copy_only=False).view(np.uint8)


def numbers(arr: pa.Array, as_float: bool) -> np.ndarray:
    """The values of a numeric column as contiguous float64 (``as_float``) or int64, nulls as 0.

    >>> numbers(pa.array([1, None, 3], pa.int32()), True)
    array([1., 0., 3.])
    """
    if arr.null_count:
        arr = arr.fill_null(0)
    dt = np.float64 if as_float else np.int64
    return np.ascontiguousarray(arr.to_numpy(zero_copy_only=False), dtype=dt)


def grow(a: np.ndarray, capacity: int, fill) -> np.ndarray:
    """``a`` copied into a new array of ``capacity`` whose new slots hold ``fill``.

    >>> grow(np.array([5, 6]), 4, -1)
    array([ 5,  6, -1, -1])
    """
    # Zero-filled arrays come from calloc: their pages are faulted in when first written, not
    # here (page faults are the main cost of growing large state on this kind of machine).
    if fill == 0:
        new = np.zeros(capacity, a.dtype)
    else:
        new = np.empty(capacity, a.dtype)
        new[len(a):] = fill
    new[: len(a)] = a
    return new


def fill_from_column(dst: np.ndarray, column: pa.ChunkedArray) -> None:
    """``dst[:len(column)] = column``, one chunk at a time.

    ``column.to_numpy()`` of a column in several chunks (as Parquet decodes them) first
    concatenates them into a new array: a fresh allocation as large as the column, i.e. page
    faults, only to copy it again.  Chunks without nulls are read in place.

    >>> dst = np.zeros(4)
    >>> fill_from_column(dst, pa.chunked_array([[1.0], [2.0, 3.0]]))
    >>> dst
    array([1., 2., 3., 0.])
    """
    off = 0
    for chunk in column.chunks:
        k = len(chunk)
        if k:
            dst[off: off + k] = chunk.to_numpy(zero_copy_only=False)
            off += k


def adopt_column(column: pa.ChunkedArray, dtype) -> Optional[np.ndarray]:
    """The values of ``column`` as a writable numpy array over its own buffer (no copy), or
    None where that is not possible (several chunks, nulls, an offset, another type, an
    immutable buffer).

    Only for tables whose buffers belong to the caller alone (decoded from a checkpoint for
    this restore): the array *becomes* state, and writing to it writes to the buffer.

    >>> adopt_column(pa.chunked_array([[1.0], [2.0]]), np.float64) is None    # two chunks
    True
    """
    if column.num_chunks != 1:
        return None
    arr = column.chunk(0)
    if arr.null_count or arr.offset or arr.type != pa.from_numpy_dtype(np.dtype(dtype)):
        return None
    buf = arr.buffers()[1]
    if buf is None or not buf.is_mutable:
        return None
    out = np.frombuffer(buf, dtype=dtype)[: len(arr)]
    return out if out.flags.writeable else None


def load_column(table: pa.Table, name: str, dtype, fill, capacity: int, owned: bool) -> np.ndarray:
    """Column ``name`` of a snapshot as a per-group array of at least ``capacity`` slots (past
    the rows: ``fill``).  ``owned``: the table's buffers belong to the caller alone, so a
    column that can be kept as it is becomes the array (no copy; 10^7 groups' fresh arrays
    cost seconds of page faults on a virtual machine).

    >>> t = pa.table({"x.n": pa.array([3, 4])})
    >>> load_column(t, "x.n", np.int64, 0, 4, owned=False)
    array([3, 4, 0, 0])
    """
    column = table.column(name)
    m = table.num_rows
    a = adopt_column(column, dtype) if owned and m >= 16 else None
    if a is None:
        a = np.empty(max(capacity, m), dtype)
        a[m:] = fill                        # the empty group's fill, past the rows
        fill_from_column(a, column)
    return a
