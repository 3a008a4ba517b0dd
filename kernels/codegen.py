"""A fused program -> one compiled kernel, and running it on batches.

:func:`compile_program` is the pipeline, for one null pattern of the input (which columns of
the batch hold nulls): rewrite (``kernels.rewrite``: constant folding on the expression tree),
emission (``kernels.emit``: the tree as the Python source of ONE Numba kernel), and the
compiled-kernel cache (``kernels.kernel_cache``: each distinct source compiled once, and kept
on disk for the next process).  :func:`run_program` runs the result on a batch: string
sub-expressions are evaluated with pyarrow first (``kernels.arrow_eval``), output arrays come
from Arrow's memory pool and are wrapped without a copy.

The program itself, :class:`FusedProgram`, is built in ``kernels.program`` (and re-exported
here).

Examples
--------
>>> from heliosdb.kernels.ir import BinOp, Col, Lit
>>> batch = pa.record_batch({"value": [0.1, 0.5, 0.9]})
>>> p = FusedProgram.identity(batch.schema)
>>> p.add_filter(BinOp(">", Col("value"), Lit(0.2)), "filter")
>>> p.add_columns({"v2": BinOp("*", Col("value"), Lit(2.0))}, "with_columns")
>>> compile_program(p, {"value": False})(batch).to_pydict()
{'value': [0.5, 0.9], 'v2': [1.0, 1.8]}
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.types as pat

from ..errors import DataError
from .arrow_eval import arrow_eval
from .emit import KernelInput, KernelSource, emit_kernel
from .ir import Expr
from .kernel_cache import load_kernel
from .program import Check, FusedProgram
from .rewrite import Folder

__all__ = ["Check", "CompiledProgram", "FusedProgram", "compile_program", "run_program"]


@dataclass
class CompiledProgram:
    """A FusedProgram ready to run on batches of its input schema (with one null pattern)."""

    program: FusedProgram
    kernel: Optional[Callable]
    code: KernelSource
    outputs: List[Tuple[str, Expr]]      # the program's outputs, folded
    output_schema: pa.Schema

    @property
    def source(self) -> str:
        """The kernel's Python source."""
        return self.code.source

    @property
    def check_ids(self) -> List[int]:
        """The program checks the kernel tests (the others can never fail on this input)."""
        return self.code.check_ids

    def __call__(self, batch: pa.RecordBatch, on_check: Optional[Callable] = None) -> pa.RecordBatch:
        return run_program(self, batch, on_check)


def compile_program(program: FusedProgram, nullable: Mapping[str, bool]) -> CompiledProgram:
    """Generate (or fetch from the cache) the fused kernel of ``program``.

    ``nullable`` tells which input columns of the current batch hold nulls (a column not in it
    holds none); the kernel is specialised for it: columns without nulls pay nothing for null
    handling, and checks that test for nulls there fold away.
    """
    fold = Folder(program.input_schema, nullable)
    predicate = None if program.predicate is None else fold(program.predicate)
    outputs = [(name, fold(e)) for name, e in program.outputs]
    checks = [(k, fold(c.cond)) for k, c in enumerate(program.checks)]
    checks = [(k, c) for k, c in checks if not fold.never_true(c)]
    code = emit_kernel(program.input_schema, nullable, predicate, outputs, checks)
    kernel = load_kernel(code.source) if code.has_loop else None
    return CompiledProgram(program, kernel, code, outputs, program.output_schema())


# -------------------------------------------------------------------------------------------
# Running a compiled program on a batch
# -------------------------------------------------------------------------------------------
def column_numpy(arr: pa.Array) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(values, validity or None) of an Arrow array as numpy, zero-copy where possible."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t):
        arr = arr.view(pa.int64())
    valid = None
    if arr.null_count:
        valid = arr.is_valid().to_numpy(zero_copy_only=False)
        if pat.is_boolean(arr.type):
            values = arr.fill_null(False).to_numpy(zero_copy_only=False)
        else:
            values = arr.fill_null(0).to_numpy(zero_copy_only=False)
    else:
        values = arr.to_numpy(zero_copy_only=False)
    return values, valid


def _np_dtype(t: pa.DataType) -> np.dtype:
    if pat.is_boolean(t):
        return np.dtype(np.bool_)
    if pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t):
        return np.dtype(np.int64)
    return np.dtype(t.to_pandas_dtype())


def pool_array(n: int, dtype: np.dtype) -> Tuple[np.ndarray, pa.Buffer]:
    """A writable numpy array over a buffer from Arrow's memory pool (no page faults per batch:
    the pool keeps freed memory, unlike large mallocs that glibc maps and unmaps)."""
    buf = pa.allocate_buffer(max(n, 1) * dtype.itemsize)
    return np.frombuffer(buf, dtype=dtype)[:n], buf


def numpy_column(values: np.ndarray, valid: Optional[np.ndarray], t: pa.DataType,
                 buf: Optional[pa.Buffer] = None) -> pa.Array:
    """An Arrow array of type ``t`` over ``values`` (zero-copy for fixed-width types)."""
    n = len(values)
    validity = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    if buf is not None and not pat.is_boolean(t):
        storage = pa.int64() if (pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t)) else t
        arr = pa.Array.from_buffers(storage, n, [validity, buf])
        return arr.view(t) if storage != t else arr
    mask = None if valid is None else ~valid
    if pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t):
        return pa.array(values, type=pa.int64(), mask=mask).view(t)
    return pa.array(values, type=t, mask=mask)


def _full(x, n: int) -> pa.Array:
    """``x`` as an array of ``n`` rows (a scalar from arrow_eval is broadcast)."""
    return pa.repeat(x, n) if isinstance(x, pa.Scalar) else x


def _input_array(inp: KernelInput, batch: pa.RecordBatch) -> pa.Array:
    if isinstance(inp.source, str):
        return batch.column(batch.schema.get_field_index(inp.source))
    return _full(arrow_eval(inp.source, batch), batch.num_rows)


def run_program(cp: CompiledProgram, batch: pa.RecordBatch,
                on_check: Optional[Callable] = None) -> pa.RecordBatch:
    """Run the kernel on ``batch``.  If one of the program's checks fails, ``on_check(check,
    row)`` is called (it should raise); without it a DataError names the step and the row."""
    n = batch.num_rows
    code = cp.code
    args = []
    for inp in code.inputs:
        values, valid = column_numpy(_input_array(inp, batch))
        args.append(values)
        if inp.nullable:
            args.append(valid if valid is not None else np.ones(n, dtype=np.bool_))
    outs = []
    bufs = []
    for name, t, nb in code.computed:
        arr, buf = pool_array(n, _np_dtype(t))
        outs.append(arr)
        bufs.append(buf)
        if nb:
            outs.append(np.empty(n, dtype=np.bool_))
    sel = np.empty(n, dtype=np.int64) if code.need_sel else None
    if sel is not None:
        outs.append(sel)
    err = None
    if code.check_ids:
        err = np.zeros(2, dtype=np.int64)
        outs.append(err)
    j = cp.kernel(*args, n, *outs) if cp.kernel is not None else n
    if j < 0:
        check, row = cp.program.checks[code.check_ids[int(err[0])]], int(err[1])
        if on_check is not None:
            on_check(check, row)
        raise DataError(f"step {check.step!r}: row {row} of the batch fails the check {check.cond!r}")
    cols: Dict[str, pa.Array] = {}
    k = 0
    for o, (name, t, nb) in enumerate(code.computed):
        values = outs[k][:j]
        k += 1
        valid = None
        if nb:
            valid = outs[k][:j]
            k += 1
        cols[name] = numpy_column(values, valid, t, bufs[o])
    idx = None if sel is None else pa.array(sel[:j])
    outputs = dict(cp.outputs)
    for name in code.taken:
        a = batch.column(batch.schema.get_field_index(outputs[name].name))
        cols[name] = a if idx is None else a.take(idx)
    for name in code.arrow_outputs:
        a = _full(arrow_eval(outputs[name], batch), n)
        cols[name] = a if idx is None else a.take(idx)
    arrays = [cols[f.name] for f in cp.output_schema]
    return pa.RecordBatch.from_arrays(arrays, schema=cp.output_schema)
