"""Find the syntax tree of a Python function, and the values of the names it reads.

A lambda's code object knows only its first line, and one line may hold several lambdas
(``s.filter(lambda e: e.x > 0).map(lambda e: {"y": e.x})``).  The whole source file is parsed
and the candidates on that line are told apart by where the code's instructions come from
(``co_positions``, Python 3.11+), or else by compiling each candidate in a closure of the same
shape and comparing byte code.  Names are resolved the way the function itself resolves them:
parameters with defaults, then closure cells, then module globals, then builtins.
"""
from __future__ import annotations

import ast
import builtins
import linecache
import os
import types
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

FunctionNode = Union[ast.Lambda, ast.FunctionDef]

_MISSING = object()
_TREES: Dict[Tuple[str, int], ast.AST] = {}


@dataclass
class FunctionSource:
    """A function's syntax tree, its record parameter, and how to look up its other names."""

    fn: Callable
    node: FunctionNode
    param: str                     # the name of the record parameter
    defaults: Dict[str, Any]       # further parameters with default values
    where: str                     # "<lambda> at file.py:12", for messages

    def lookup(self, name: str) -> Any:
        """The value ``name`` has inside the function (``_MISSING`` if it has none)."""
        if name in self.defaults:
            return self.defaults[name]
        code = self.fn.__code__
        if name in code.co_freevars:
            cell = self.fn.__closure__[code.co_freevars.index(name)]
            try:
                return cell.cell_contents
            except ValueError:
                return _MISSING
        if name in self.fn.__globals__:
            return self.fn.__globals__[name]
        return getattr(builtins, name, _MISSING)


def describe(fn: Callable) -> str:
    """``"<lambda> at pipeline.py:12"``: how messages name a function."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return repr(fn)
    return f"{code.co_name} at {os.path.basename(code.co_filename)}:{code.co_firstlineno}"


def function_source(fn: Callable) -> Tuple[Optional[FunctionSource], Optional[str]]:
    """(FunctionSource, None), or (None, why the function's source cannot be used)."""
    if not isinstance(fn, types.FunctionType):
        kind = type(fn)
        name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        article = "an" if name[:1].lower() in "aeiou" else "a"
        return None, f"is not a plain Python function or lambda (it is {article} {name})"
    code = fn.__code__
    if code.co_flags & (0x20 | 0x80 | 0x100 | 0x200):      # generator / coroutine flags
        return None, "is a generator or coroutine function"
    tree = _parse(code.co_filename, fn.__globals__)
    if tree is None:
        return None, f"has no source code available ({code.co_filename})"
    node, why = _find(tree, code)
    if node is None:
        return None, why
    args = node.args
    positional = args.posonlyargs + args.args
    if args.vararg or args.kwarg or args.kwonlyargs or not positional:
        return None, "takes *args, **kwargs or keyword-only parameters (it should take the record)"
    n_defaults = len(args.defaults)
    if len(positional) - n_defaults != 1:
        return None, "takes more than one parameter without a default (it should take the record)"
    defaults = {a.arg: v for a, v in zip(positional[1:], fn.__defaults__ or ())}
    return FunctionSource(fn, node, positional[0].arg, defaults, describe(fn)), None


def _parse(filename: str, module_globals: dict) -> Optional[ast.AST]:
    lines = linecache.getlines(filename, module_globals)
    if not lines:
        return None
    text = "".join(lines)
    key = (filename, hash(text))
    tree = _TREES.get(key)
    if tree is None:
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return None
        if len(_TREES) > 256:
            _TREES.clear()
        _TREES[key] = tree
    return tree


def _find(tree: ast.AST, code: types.CodeType) -> Tuple[Optional[FunctionNode], Optional[str]]:
    line = code.co_firstlineno
    if code.co_name == "<lambda>":
        found: List[FunctionNode] = [n for n in ast.walk(tree)
                                     if isinstance(n, ast.Lambda) and n.lineno == line]
    else:
        found = [n for n in ast.walk(tree)
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == code.co_name
                 and min([n.lineno] + [d.lineno for d in n.decorator_list]) == line]
        found = [n for n in found if isinstance(n, ast.FunctionDef)]
    if len(found) > 1:
        found = _by_positions(found, code) or _by_bytecode(found, code)
    if len(found) > 1 and len({ast.dump(n) for n in found}) == 1:
        found = found[:1]         # identical candidates translate identically
    if len(found) == 1:
        return found[0], None
    if not found:
        return None, f"could not be found in its source file at line {line} (was the file changed?)"
    return None, (f"shares line {line} with {len(found) - 1} other function(s) that cannot be told "
                  "apart; put it on a line of its own")


def _by_positions(found: List[FunctionNode], code: types.CodeType) -> List[FunctionNode]:
    """Candidates whose source span holds every instruction of ``code`` (Python 3.11+); the
    innermost of them if they nest."""
    positions = getattr(code, "co_positions", None)
    if positions is None:
        return []
    # Instructions the compiler adds (RESUME, the implicit return) have empty spans: skip them.
    spans = [((ln, col), (eln, ecol)) for ln, eln, col, ecol in positions()
             if None not in (ln, eln, col, ecol) and (eln, ecol) > (ln, col)]
    if not spans:
        return []

    def holds(n: FunctionNode) -> bool:
        start, end = (n.lineno, n.col_offset), (n.end_lineno, n.end_col_offset)
        return all(start <= a and b <= end for a, b in spans)

    inside = [n for n in found if holds(n)]
    if len(inside) > 1:       # nested candidates: keep the smallest span
        inside.sort(key=lambda n: ((n.end_lineno - n.lineno), n.end_col_offset - n.col_offset))
        inside = inside[:1]
    return inside


def _by_bytecode(found: List[FunctionNode], code: types.CodeType) -> List[FunctionNode]:
    """Candidates that compile to the same byte code, compiled inside a function that defines
    the same free variables (so closure reads compile as they did originally)."""
    out = []
    for n in found:
        body: List[ast.stmt] = [ast.Assign(targets=[ast.Name(v, ast.Store())], value=ast.Constant(None))
                                for v in code.co_freevars]
        if isinstance(n, ast.Lambda):
            body.append(ast.Return(n))
        else:
            body += [n, ast.Return(ast.Name(n.name, ast.Load()))]
        outer = ast.FunctionDef(name="__outer__", body=body, decorator_list=[], returns=None,
                                args=ast.arguments(posonlyargs=[], args=[], kwonlyargs=[],
                                                   kw_defaults=[], defaults=[]))
        module = ast.fix_missing_locations(ast.Module(body=[outer], type_ignores=[]))
        try:
            compiled = compile(module, code.co_filename, "exec")
        except (SyntaxError, ValueError):
            continue
        inner = _code_named(compiled, code.co_name)
        if inner is not None and inner.co_code == code.co_code and inner.co_names == code.co_names \
                and inner.co_varnames == code.co_varnames:
            out.append(n)
    return out


def _code_named(code: types.CodeType, name: str) -> Optional[types.CodeType]:
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            if c.co_name == name:
                return c
            found = _code_named(c, name)
            if found is not None:
                return found
    return None
