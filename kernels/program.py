"""What a chain of stateless steps computes: a :class:`FusedProgram` over the chain's input.

A chain of consecutive stateless operators (filter, with_columns, select, and Python functions
compiled by ``heliosdb.pyfunc``) folds into one program: one predicate (the AND of every
filter, rewritten over the chain's input columns), one list of outputs, and the checks of
compiled functions.  ``kernels.codegen`` compiles a program into ONE kernel.

Examples
--------
>>> from heliosdb.kernels.ir import BinOp, Col, Lit
>>> p = FusedProgram.identity(pa.schema([("x", pa.float64())]))
>>> p.add_columns({"y": BinOp("*", Col("x"), Lit(2.0))}, "double")
>>> p.add_filter(BinOp(">", Col("y"), Lit(1.0)), "big")
>>> p.predicate, p.output_schema().names
(((col("x") * 2.0) > 1.0), ['x', 'y'])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import pyarrow as pa
import pyarrow.types as pat

from ..errors import SchemaError
from .ir import BinOp, Col, Expr
from .rewrite import substitute


@dataclass
class Check:
    """A condition that must never hold for a row that reaches ``step``: where ``cond`` is true,
    the kernel stops and the batch fails on that row.  ``info`` is the caller's description of
    the error (``heliosdb.pyfunc`` uses it to raise what Python would have raised)."""

    cond: Expr
    info: object
    step: str


@dataclass
class FusedProgram:
    """What a chain of stateless operators computes, over the chain's input schema."""

    input_schema: pa.Schema
    outputs: List[Tuple[str, Expr]]
    predicate: Optional[Expr] = None
    steps: List[str] = field(default_factory=list)
    checks: List[Check] = field(default_factory=list)

    @classmethod
    def identity(cls, schema: pa.Schema) -> "FusedProgram":
        """The program that passes every column of ``schema`` through."""
        return cls(schema, [(n, Col(n)) for n in schema.names])

    def _mapping(self) -> Dict[str, Expr]:
        return dict(self.outputs)

    def output_schema(self) -> pa.Schema:
        """The schema of the batches the program produces."""
        fields = []
        for name, e in self.outputs:
            if isinstance(e, Col):
                fields.append(self.input_schema.field(e.name).with_name(name))
            else:
                fields.append(pa.field(name, e.dtype(self.input_schema)))
        return pa.schema(fields)

    def add_filter(self, pred: Expr, step: str) -> None:
        """Keep only the rows where ``pred`` (over the current outputs) is true."""
        schema = self.output_schema()
        t = pred.dtype(schema, step)
        if not (pat.is_boolean(t) or pat.is_null(t)):
            raise SchemaError(f"step {step!r}: filter needs a boolean expression, {pred!r} is {t}")
        p = substitute(pred, self._mapping())
        self.predicate = p if self.predicate is None else BinOp("&", self.predicate, p)
        self.steps.append(step)

    def add_columns(self, exprs: Dict[str, Expr], step: str) -> None:
        """Add (or replace) the columns ``exprs``, computed from the current outputs."""
        schema = self.output_schema()
        mapping = self._mapping()
        new = dict(self.outputs)
        for name, e in exprs.items():
            e.dtype(schema, step)
            new[name] = substitute(e, mapping)
        self.outputs = list(new.items())
        self.steps.append(step)

    def select(self, items: List[Tuple[str, Expr]], step: str) -> None:
        """Replace the outputs by ``items`` (name, expression over the current outputs)."""
        schema = self.output_schema()
        mapping = self._mapping()
        seen = set()
        out = []
        for name, e in items:
            if name in seen:
                raise SchemaError(f"step {step!r}: select() names column {name!r} twice")
            seen.add(name)
            e.dtype(schema, step)
            out.append((name, substitute(e, mapping)))
        self.outputs = out
        self.steps.append(step)

    def add_function(self, checks: List[Tuple[Expr, object]], keep: Optional[Expr],
                     outputs: Optional[List[Tuple[str, Expr]]], step: str) -> None:
        """One step compiled from a Python function: its checks, then the rows it keeps, then
        (if ``outputs`` is not None) its new record.  Sub-expressions shared between them stay
        shared, so the kernel computes each once."""
        schema = self.output_schema()
        mapping = self._mapping()
        memo: Dict[int, Expr] = {}
        before = self.predicate
        for cond, info in checks:
            t = cond.dtype(schema, step)
            if not (pat.is_boolean(t) or pat.is_null(t)):
                raise SchemaError(f"step {step!r}: a check must be boolean, {cond!r} is {t}")
            c = substitute(cond, mapping, memo)
            self.checks.append(Check(c if before is None else BinOp("&", before, c), info, step))
        if keep is not None:
            t = keep.dtype(schema, step)
            if not (pat.is_boolean(t) or pat.is_null(t)):
                raise SchemaError(f"step {step!r}: a filter must be boolean, {keep!r} is {t}")
            p = substitute(keep, mapping, memo)
            self.predicate = p if before is None else BinOp("&", before, p)
        if outputs is not None:
            new = []
            for name, e in outputs:
                e.dtype(schema, step)
                new.append((name, substitute(e, mapping, memo)))
            self.outputs = new
        self.steps.append(step)

    def prune(self, needed: Optional[set]) -> None:
        """Drop outputs nothing downstream reads (``needed`` None keeps all)."""
        if needed is not None:
            self.outputs = [(n, e) for n, e in self.outputs if n in needed]

    def is_identity(self) -> bool:
        """True if the program passes its input through unchanged."""
        return self.predicate is None and not self.checks and all(
            isinstance(e, Col) and e.name == n for n, e in self.outputs
        ) and [n for n, _ in self.outputs] == self.input_schema.names
