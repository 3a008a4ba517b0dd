"""The body of a ``def`` function and what its returns make of the step.

``FunctionBody`` is the half of the translator that walks statements: local assignments,
``if``/``elif``/``else`` (each branch translated under its condition, the locals of one branch
invisible to the other) and ``return``, into a tree of returns (:class:`Leaf` / :class:`Branch`).
It then assembles that tree into what the step computes: the rows a ``filter`` or ``process``
keeps, and the columns of the record a ``map`` or ``process`` returns, each column one
expression choosing between the returns by their conditions.  Paths where Python would fail at
run time (``map`` returning None, a dict with other keys) become checks.  A mixin of
``Translator`` (``translate``), whose ``ev``, ``truth_of``, ``under``, ``pick`` and
``unsupported`` it uses.
"""
from __future__ import annotations

import ast
from typing import List, Optional, Tuple

from ..kernels.ir import Expr, Lit
from .values import (
    BOOL, DICT, MAX_LEAVES, NONE, OBJ, OTHER, SCALAR_COLUMN, STR, UNKNOWN, _RECORD, Branch, CheckInfo,
    Leaf, Translation, Tree, Val, _a, _and, _arrow, _code, _ite_bool, _not)


class FunctionBody:
    """Statements, returns, and the assembly of the returns (see the module docstring)."""

    # -- statements ----------------------------------------------------------------------------------
    def block(self, stmts: List[ast.stmt]) -> Tree:
        for k, st in enumerate(stmts):
            if isinstance(st, ast.Return):
                return self.ret(st.value)
            if isinstance(st, ast.If):
                t = self.truth_of(st.test)
                rest = stmts[k + 1:]
                if isinstance(t, Lit):
                    return self.block((st.body if t.value else st.orelse) + rest)
                env = dict(self.env)
                with self.under(t):
                    a = self.block(st.body + rest)
                self.env = dict(env)
                with self.under(None if t is None else _not(t)):
                    b = self.block(st.orelse + rest)
                self.env = env
                return Branch(t, a, b)
            if isinstance(st, (ast.Pass,)) or (isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant)):
                continue
            if isinstance(st, ast.Assign):
                v = self.ev(st.value)
                for target in st.targets:
                    if not self.assign(target, v, st.value):
                        return Leaf(Val(UNKNOWN))
                continue
            if isinstance(st, ast.AnnAssign) and st.value is not None and st.simple:
                if not self.assign(st.target, self.ev(st.value), st.value):
                    return Leaf(Val(UNKNOWN))
                continue
            if isinstance(st, ast.AugAssign) and isinstance(st.target, ast.Name) \
                    and st.target.id in self.env:
                node = ast.BinOp(ast.Name(st.target.id, ast.Load()), st.op, st.value)
                ast.copy_location(node, st)
                self.env[st.target.id] = self._ev_BinOp(node)
                continue
            self.unsupported(_describe_stmt(st))
            return Leaf(Val(UNKNOWN))
        return self.ret(None)

    def assign(self, target: ast.AST, v: Val, value: ast.AST) -> bool:
        if isinstance(target, ast.Name):
            self.env[target.id] = v
            return True
        if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) and \
                len(target.elts) == len(value.elts) and all(isinstance(t, ast.Name) for t in target.elts):
            vals = [self.ev(x) for x in value.elts]
            for t, x in zip(target.elts, vals):
                self.env[t.id] = x
            return True
        if isinstance(target, ast.Subscript):
            self.unsupported(f"assigns to an item ({_code(target)} = ...); build the dict in one "
                             "expression instead, e.g. {**e, 'x': ...}")
        else:
            self.unsupported(f"assigns to {_code(target)}")
        return False

    def ret(self, node: Optional[ast.AST]) -> Tree:
        self.leaves += 1
        if self.leaves > MAX_LEAVES:
            self.unsupported(f"has more than {MAX_LEAVES} paths to a return")
            return Leaf(Val(UNKNOWN))
        if node is None or (isinstance(node, ast.Constant) and node.value is None):
            return Leaf(None)
        if isinstance(node, ast.IfExp):
            t = self.truth_of(node.test)
            if isinstance(t, Lit):
                return self.ret(node.body if t.value else node.orelse)
            with self.under(t):
                a = self.ret(node.body)
            with self.under(None if t is None else _not(t)):
                b = self.ret(node.orelse)
            return Branch(t, a, b)
        if self.mode == "filter":
            return Leaf(Val(BOOL, self.truth_of(node)))
        v = self.ev(node)
        if v.kind == OBJ and v.const is _RECORD:
            v = Val(DICT, items=tuple(self.record_items()))
        return Leaf(v)

    # -- from the returns to the step's output ---------------------------------------------
    def _leaves(self, tree: Tree, cond: Optional[Expr] = None) -> List[Tuple[Optional[Expr], Leaf]]:
        if isinstance(tree, Leaf):
            return [(cond, tree)]
        if tree.cond is None:
            return self._leaves(tree.then) + self._leaves(tree.otherwise)
        return (self._leaves(tree.then, _and(cond, tree.cond)) +
                self._leaves(tree.otherwise, _and(cond, _not(tree.cond))))

    def fold_keep(self, tree: Tree, value) -> Optional[Expr]:
        if isinstance(tree, Leaf):
            if tree.value is None:
                return Lit(False)
            return value(tree.value)
        a, b = self.fold_keep(tree.then, value), self.fold_keep(tree.otherwise, value)
        if tree.cond is None or a is None or b is None:
            return None
        return _ite_bool(tree.cond, a, b)

    def assemble(self, tree: Tree, out: Translation) -> None:
        """map/process: the rows kept and the new record, from every return of the function."""
        leaves = self._leaves(tree)
        values = [leaf.value for _, leaf in leaves if leaf.value is not None]
        if any(v.kind == UNKNOWN for v in values):
            return
        dicts = [v for v in values if v.kind == DICT]
        if dicts and len(dicts) != len(values):
            self.unsupported("returns a dict in one place and a single value in another")
            return
        if not values:
            self.unsupported("always returns None")
            return
        if dicts:
            keys = [k for k, _ in dicts[0].items]
        else:
            keys = [SCALAR_COLUMN]
        wanted = set(keys)

        def usable(v: Optional[Val]) -> bool:
            return v is not None and (v.kind != DICT or {k for k, _ in v.items} == wanted)

        # Paths that Python would reject at run time: None from map(), other keys.
        for cond, leaf in leaves:
            guard = Lit(True) if cond is None else cond
            if leaf.value is None and self.mode == "map":
                self.checks.append((guard, CheckInfo(
                    TypeError, "map() function returned None; use process() to drop records",
                    "return None", self.src.where)))
            elif leaf.value is not None and not usable(leaf.value):
                got = sorted(k for k, _ in leaf.value.items)
                self.checks.append((guard, CheckInfo(
                    ValueError, f"returned a dict with keys {got}, but the step's output "
                    f"columns are {keys}", "return {...}", self.src.where)))
        if self.mode == "process":
            out.keep = self.fold_keep(tree, lambda v: Lit(usable(v)))
        out.kinds = []
        outputs = []
        for k in keys:
            v = self.fold_value(tree, k, usable)
            if v is None or v.kind in (UNKNOWN, NONE) or (v.expr is None and not v.column):
                if v is not None and v.kind == NONE:
                    self.unsupported(f"always returns None for {k!r}")
                out.kinds.append((k, None if v is None or v.kind in (UNKNOWN, NONE) else
                                  (self.schema.field(v.column).type if v.column else _arrow(v.kind))))
                continue
            if v.kind in (STR, OTHER) and not v.column and not v.is_const:
                self.unsupported(f"computes {_a(v.kind)} for {k!r}")
            out.kinds.append((k, self.schema.field(v.column).type if v.column else _arrow(v.kind)))
            outputs.append((k, v.expr))
        if not self.reasons:
            out.outputs = outputs

    def fold_value(self, tree: Tree, key: str, usable) -> Optional[Val]:
        if isinstance(tree, Leaf):
            v = tree.value
            if not usable(v):
                return None
            return dict(v.items)[key] if v.kind == DICT else v
        a = self.fold_value(tree.then, key, usable)
        b = self.fold_value(tree.otherwise, key, usable)
        if a is None or b is None:
            return b if a is None else a
        return self.pick(tree.cond, a, b, ast.Name(key))



def _describe_stmt(st: ast.stmt) -> str:
    kind = type(st).__name__
    if isinstance(st, ast.Expr) and isinstance(st.value, ast.Call):
        return f"calls {_code(st.value.func)}() for its side effect"
    return {
        "For": "uses a for loop", "AsyncFor": "uses a for loop", "While": "uses a while loop",
        "Try": "uses try/except", "TryStar": "uses try/except", "With": "uses a with block",
        "AsyncWith": "uses a with block", "Raise": "raises an exception", "Assert": "uses assert",
        "Import": "imports a module", "ImportFrom": "imports a module",
        "Global": "declares global names", "Nonlocal": "declares nonlocal names",
        "Delete": "deletes names", "FunctionDef": "defines a nested function",
        "AsyncFunctionDef": "defines a nested function", "ClassDef": "defines a class",
        "Match": "uses match", "Expr": "evaluates an expression for its side effect",
    }.get(kind, f"uses a {kind} statement")

