"""Per-event Python functions (``map``, ``filter``, ``process``) at compiled speed.

A function built from arithmetic, comparisons, ``and``/``or``/``not``, conditionals, ``math``
functions and constants is translated into expression trees (``translate``) and becomes part of
its stage's ONE fused Numba kernel, next to the ``filter``/``with_columns``/``select`` steps
around it.  It keeps Python's semantics: ``/`` is true division, ``//`` and ``%`` floor,
integers are exact (a result outside int64 raises instead of wrapping), and wherever Python
would raise (``None`` in arithmetic, a zero divisor, a math domain error) the kernel raises the
same exception type on the same record, as a RecordError naming the step.

Anything else runs record by record in Python (``operators.pyfunc``), with one
PythonFallbackWarning per step naming the construct that stopped the translation.

- ``source``: finding the function's syntax tree (lambdas sharing a line included) and names
- ``translate``: the walk over the syntax tree (expressions, records, dicts) -> expressions
  and checks, or the reasons it cannot be done
- ``body``: a ``def``'s statements and returns, assembled into the rows kept and the new record
- ``semantics``: what Python's operators, builtins and ``math`` functions mean there
- ``values``: the kinds of values, ``Val``, checks and the tree of returns
- ``record``: the record passed to a function, and results back to Arrow
- ``step``: planning a step (compiled or not, its output schema, the warning)
"""
from .record import Record, record_type
from .step import PlannedFunction, plan_function
from .values import SCALAR_COLUMN

__all__ = ["Record", "record_type", "PlannedFunction", "plan_function", "SCALAR_COLUMN"]
