"""Planning one ``map``/``filter``/``process`` step: compiled into the fused kernel, or run in
Python with a one-time warning that says why; and its output schema either way.

The output schema of a compiled function is what its translation computes (the same schema the
interpreted path then produces, so ``compile=False`` changes nothing but speed).  A function
that does not compile gets ``schema=`` if given, else the types the translator could still work
out from its source; if some column's type is unknown, planning fails with a PlanError naming
the step and the columns.
"""
from __future__ import annotations

import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional, Set, Tuple

import pyarrow as pa
import pyarrow.types as pat

from ..errors import PlanError, PythonFallbackWarning, SchemaError
from ..kernels.ir import Cast, Expr
from ..kernels.program import FusedProgram
from .source import describe, function_source
from .translate import Translation, translate
from .values import SCALAR_COLUMN


@dataclass
class PlannedFunction:
    """How one function step runs.  ``compiled``: in the fused kernel; otherwise per record (the
    planner makes its ``operators.pyfunc.PythonFunctionOperator``), and ``reason`` says why (None
    when the user asked for ``compile=False``)."""

    kind: str
    name: str
    fn: Callable
    where: str
    compiled: bool
    reason: Optional[str]
    translation: Optional[Translation]
    input_schema: pa.Schema
    output_schema: pa.Schema

    def apply(self, program: FusedProgram) -> None:
        """Add this (compiled) step to a fused program."""
        t = self.translation
        program.add_function(t.checks, t.keep, t.outputs, self.name)


def plan_function(node, schema: pa.Schema) -> PlannedFunction:
    """Plan the function step ``node`` (a ``logical.Node`` of a ``logical.PyFunction``) over
    input ``schema``; cached on the node, so a job plans each step once and the fallback
    warning is emitted once per step."""
    cache = node.memo.setdefault("planned", {})
    key = (node.name, schema.serialize().to_pybytes())
    if key not in cache:
        cache[key] = _plan(node, schema)
    planned = cache[key]
    if not planned.compiled and planned.reason and not node.memo.get("warned"):
        node.memo["warned"] = True
        seen = _function_key(planned.fn, planned.reason)
        if seen not in _WARNED:
            _WARNED.add(seen)
            warnings.warn(PythonFallbackWarning(
                f"step {node.name!r}: {planned.where} runs record by record in Python, not in the "
                f"compiled kernel: it {planned.reason} (said once per process for this function)"),
                stacklevel=_caller_level())
    return planned


#: Functions already warned about: (module, qualified name, byte code, reason).
_WARNED: Set[tuple] = set()


def _function_key(fn: Callable, reason: str) -> tuple:
    """What makes a function "the same" for the fallback warning: its name and byte code, so
    a notebook cell run again (a new function object of the same source) is not warned twice.

    >>> _function_key(lambda e: e.x, "r") == _function_key(lambda e: e.x, "r")
    True
    >>> _function_key(lambda e: e.x, "r") == _function_key(lambda e: e.y, "r")
    False
    """
    code = getattr(fn, "__code__", None)
    ident = (code.co_code, code.co_consts, code.co_names) if code is not None else id(type(fn))
    return (getattr(fn, "__module__", None), getattr(fn, "__qualname__", repr(type(fn))), ident, reason)


def _caller_level() -> int:
    """The stacklevel of the first frame outside heliosdb (the user's collect()/execute())."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(here):
        frame, level = frame.f_back, level + 1
    return level


def _plan(node, schema: pa.Schema) -> PlannedFunction:
    kind, name, fn = node.kind, node.name, node.step.fn
    declared: Optional[pa.Schema] = node.step.schema
    src, reason = function_source(fn)
    tr = translate(src, schema, name, kind) if src is not None else None
    if tr is not None and tr.reasons:
        reason = tr.reasons[0]
    where = describe(fn)
    if tr is not None and tr.compiled:
        if declared is not None:
            _reconcile(tr, declared, name, schema)
        program = FusedProgram.identity(schema)
        program.add_function(tr.checks, tr.keep, tr.outputs, name)
        out = program.output_schema()
        return PlannedFunction(kind, name, fn, where, node.step.compile,
                               None, tr, schema, out)
    if kind == "filter":
        out = schema
    elif declared is not None:
        out = declared
    else:
        out = _inferred(tr, name, kind, where, reason)
    return PlannedFunction(kind, name, fn, where, False, reason, tr, schema, out)


def _inferred(tr: Optional[Translation], name: str, kind: str, where: str,
              reason: Optional[str]) -> pa.Schema:
    fix = (f"pass schema=pa.schema([...]) to {kind}(), e.g. {kind}(fn, schema=pa.schema("
           "[('x', pa.int64())]))")
    if tr is None or tr.kinds is None:
        raise PlanError(
            f"step {name!r}: {where} runs in Python (it {reason}), and its output columns cannot "
            f"be worked out from its source; {fix}")
    unknown = [k for k, t in tr.kinds if t is None]
    if unknown:
        raise PlanError(
            f"step {name!r}: {where} runs in Python (it {reason}), and the type of its output "
            f"column(s) {unknown} cannot be worked out from its source; {fix}")
    return pa.schema([pa.field(k, t) for k, t in tr.kinds])


def _widens(src: pa.DataType, dst: pa.DataType) -> bool:
    """A conversion that loses nothing and that Python's values would undergo too."""
    if src == dst:
        return True
    if pat.is_integer(src) and pat.is_floating(dst):
        return pat.is_float64(dst)
    if pat.is_integer(src) and pat.is_integer(dst):
        return pat.is_signed_integer(dst) and dst.bit_width > src.bit_width
    if pat.is_floating(src) and pat.is_floating(dst):
        return dst.bit_width >= src.bit_width
    return False


def _reconcile(tr: Translation, declared: pa.Schema, name: str, schema: pa.Schema) -> None:
    """Apply ``schema=`` to a compiled map/process: same columns, types equal or widened."""
    outputs = tr.outputs
    if len(outputs) == 1 and outputs[0][0] == SCALAR_COLUMN and len(declared) == 1:
        outputs = [(declared.names[0], outputs[0][1])]
    got = dict(outputs)
    if set(got) != set(declared.names):
        raise PlanError(
            f"step {name!r}: schema= declares the columns {declared.names}, but the function "
            f"returns {list(got)}; make them match (or leave out schema=)")
    new: List[Tuple[str, Expr]] = []
    for f in declared:
        e = got[f.name]
        t = e.dtype(schema, name)
        if t != f.type:
            if not _widens(t, f.type):
                raise SchemaError(
                    f"step {name!r}: schema= declares {f.name!r} as {f.type}, but the function "
                    f"computes {t}; declare {t} (or leave out schema=)")
            e = Cast(e, f.type)
        new.append((f.name, e))
    tr.outputs = new
