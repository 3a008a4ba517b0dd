"""The fused stateless operator: one generated Numba kernel for a chain of filter/select/
with_columns steps, plus the Python-level stateless operators (map_batches, inspect)."""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import pyarrow as pa

from ..errors import ExecutionError, SchemaError
from ..kernels.codegen import CompiledProgram, compile_program
from ..kernels.program import Check, FusedProgram
from .base import Item, Operator


class FusedOperator(Operator):
    """Runs a :class:`FusedProgram`; the kernel is specialised per null pattern of the input."""

    kind = "fused"
    parallel_kind = "replicas"

    def __init__(self, program: FusedProgram, name: str):
        self.program = program
        self.name = name
        self._compiled: Dict[Tuple[bool, ...], CompiledProgram] = {}
        self._identity = program.is_identity()
        self.output_schema = program.output_schema()
        self._seen = 0          # rows received so far: a failed check names its record by it
        #: Replicas to run (``set_parallelism`` / ``StreamingConfig(parallelism=)``); the plan
        #: makes them with :meth:`replica`.
        self.parallel = 1

    def replica(self, index: int) -> "FusedOperator":
        """Replica ``index`` of this operator: the same program and compiled kernels (they
        keep no state), its own name (``name#index``) and record count."""
        op = FusedOperator.__new__(FusedOperator)
        op.__dict__.update(self.__dict__)
        op.name = f"{self.name}#{index}"
        op._compiled = dict(self._compiled)
        op._seen = 0
        return op

    def seek_rows(self, rows: int) -> None:
        """As a replica: the next batch comes after ``rows`` rows of the whole input, so a
        failed check names the record's position in the input every replica shares."""
        self._seen = rows

    def _kernel_for(self, batch: pa.RecordBatch) -> CompiledProgram:
        key = tuple(c.null_count > 0 for c in batch.columns)
        cp = self._compiled.get(key)
        if cp is None:
            nullable = {f.name: k for f, k in zip(batch.schema, key)}
            cp = compile_program(self.program, nullable)
            self._compiled[key] = cp
        return cp

    def warm(self) -> None:
        """Compile the kernel for null-free input ahead of the first batch."""
        self.process_batch(pa.RecordBatch.from_pylist([], schema=self.program.input_schema))

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        if self._identity:
            return [batch]
        if batch.schema != self.program.input_schema:
            batch = _conform(batch, self.program.input_schema, self.name)
        if self.program.checks:
            try:
                out = self._kernel_for(batch)(batch, lambda check, row: self._failed(check, batch, row))
            finally:
                self._seen += batch.num_rows
        else:
            out = self._kernel_for(batch)(batch)
        return [out] if out.num_rows else []

    def _failed(self, check: Check, batch: pa.RecordBatch, row: int) -> None:
        """A check of a compiled Python function failed: raise what Python would have raised."""
        from ..pyfunc.record import batch_row, record_error

        info = check.info
        error = info.exc(info.message)
        raise record_error(check.step, self._seen + row, batch_row(batch, row), error,
                           f"in `{info.code}`, {info.where}, compiled")

    def describe(self) -> str:
        steps = " -> ".join(self.program.steps) or "project"
        return f"fused kernel [{steps}]"


def _conform(batch: pa.RecordBatch, schema: pa.Schema, step: str) -> pa.RecordBatch:
    """Cast a batch whose schema differs only in metadata or nullability."""
    try:
        return pa.RecordBatch.from_arrays(
            [batch.column(batch.schema.get_field_index(f.name)).cast(f.type) for f in schema],
            schema=schema,
        )
    except (KeyError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SchemaError(
            f"step {step!r}: a batch with schema {batch.schema} does not match the expected "
            f"{schema}: {exc}"
        ) from exc


class MapBatchesOperator(Operator):
    """``map_batches(fn)``: Arrow in, Arrow out, called once per batch."""

    kind = "map_batches"

    def __init__(self, fn: Callable, name: str, output_schema: pa.Schema):
        self.fn = fn
        self.name = name
        self.output_schema = output_schema

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        out = self.fn(batch)
        if isinstance(out, pa.Table):
            batches = out.combine_chunks().to_batches() if out.num_rows else []
        elif isinstance(out, pa.RecordBatch):
            batches = [out] if out.num_rows else []
        else:
            raise ExecutionError(
                f"step {self.name!r}: map_batches function {getattr(self.fn, '__name__', self.fn)!r} "
                f"must return a pyarrow.RecordBatch or Table, got {type(out).__name__}"
            )
        for b in batches:
            if b.schema != self.output_schema and not b.schema.equals(self.output_schema, check_metadata=False):
                raise SchemaError(
                    f"step {self.name!r}: map_batches returned schema {b.schema}, but its output was "
                    f"declared (or inferred from an empty batch) as {self.output_schema}; pass "
                    "schema= to map_batches"
                )
        return batches


class InspectOperator(Operator):
    """``inspect(fn)``: calls ``fn(batch)`` for its side effect and passes the batch on."""

    kind = "inspect"

    def __init__(self, fn: Callable, name: str):
        self.fn = fn
        self.name = name

    def process_batch(self, batch: pa.RecordBatch) -> List[Item]:
        self.fn(batch)
        return [batch]
