"""Sub-expressions a Numba kernel cannot compute, evaluated with ``pyarrow.compute``.

Numba cannot read Arrow strings, so a comparison or cast that reads or makes a string (and a
null test of a column that is not a kernel type) is evaluated on the batch with pyarrow first;
its result enters the kernel as one more boolean or numeric input column.  A computed output
column of string type is evaluated here entirely.

Examples
--------
>>> from heliosdb.kernels.ir import BinOp, Col, Lit, Types
>>> batch = pa.record_batch({"s": ["a", "b", None]})
>>> e = BinOp("==", Col("s"), Lit("a"))
>>> needs_arrow(e, Types(batch.schema)), arrow_eval(e, batch).to_pylist()
(True, [True, False, None])
"""
from __future__ import annotations

from typing import Callable, Dict, Union

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.types as pat

from ..errors import PlanError
from .ir import BinOp, Cast, Col, Expr, IsNull, Lit, is_numeric, is_stringlike

_ARROW_CMP: Dict[str, Callable] = {
    "==": pc.equal, "!=": pc.not_equal, "<": pc.less, "<=": pc.less_equal,
    ">": pc.greater, ">=": pc.greater_equal,
}


def kernel_type(t: pa.DataType) -> bool:
    """A type a kernel reads and writes as a numpy array (times as int64).

    >>> kernel_type(pa.timestamp("ms")), kernel_type(pa.string())
    (True, False)
    """
    return is_numeric(t) or pat.is_timestamp(t) or pat.is_duration(t) or pat.is_date64(t)


def needs_arrow(e: Expr, types: Callable[[Expr], pa.DataType]) -> bool:
    """True if ``e`` itself (not just a child) must be evaluated by pyarrow (strings);
    ``types`` gives a node's type (an :class:`heliosdb.kernels.ir.Types`)."""
    if isinstance(e, BinOp) and e.op in _ARROW_CMP:
        return is_stringlike(types(e.left)) or is_stringlike(types(e.right))
    if isinstance(e, Cast):
        return is_stringlike(e.to) or is_stringlike(types(e.operand))
    if isinstance(e, IsNull):
        return not kernel_type(types(e.operand))
    return False


def arrow_eval(e: Expr, batch: pa.RecordBatch) -> Union[pa.Array, pa.Scalar]:
    """Evaluate a string-valued or string-reading expression with pyarrow.compute (a constant
    gives a scalar, which pyarrow.compute broadcasts)."""
    if isinstance(e, Col):
        return batch.column(batch.schema.get_field_index(e.name))
    if isinstance(e, Lit):
        return pa.scalar(e.value, type=e.dtype(batch.schema))
    if isinstance(e, BinOp) and e.op in _ARROW_CMP:
        return _ARROW_CMP[e.op](arrow_eval(e.left, batch), arrow_eval(e.right, batch))
    if isinstance(e, IsNull):
        v = arrow_eval(e.operand, batch)
        return pc.is_valid(v) if e.negate else pc.is_null(v)
    if isinstance(e, Cast):
        return pc.cast(arrow_eval(e.operand, batch), e.to, safe=False)
    raise PlanError(
        f"{e!r} mixes string and arithmetic operations in a way the engine does not compile; "
        "compute the numeric part in its own with_columns() step"
    )
