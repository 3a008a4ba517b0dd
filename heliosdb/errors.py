"""Every exception HeliosDB raises lives here.

All of them derive from :class:`HeliosError`, so ``except hdb.HeliosError`` catches anything the
engine itself raises.  Messages name the step, the column or value that was wrong, and the fix.
"""
from __future__ import annotations


class HeliosError(Exception):
    """Base class of every error raised by HeliosDB.

    ``step`` names the step (operator) the error came from, when it came from one ("" if not).
    """

    step: str = ""


class ConfigError(HeliosError, ValueError):
    """A configuration value is out of range or of the wrong type."""


class SchemaError(HeliosError, KeyError):
    """A column is missing, or has a type the step cannot use."""

    def __str__(self) -> str:  # KeyError would repr() the message; show it as written
        return str(self.args[0]) if self.args else ""


class PlanError(HeliosError, ValueError):
    """The pipeline cannot be built as written (e.g. aggregate without key_by)."""


class ExecutionError(HeliosError, RuntimeError):
    """A stage failed while the job was running; the original error is chained."""


class StateLimitError(HeliosError, RuntimeError):
    """A step's state grew over the state backend's bound (``StateBackend.memory(max_size_bytes=)``
    or, with RocksDB, what stays in memory): the job stops.  ``step`` names the step; the
    message says how large the state was, what it held, and how to get under the bound.

    >>> import heliosdb as hdb
    >>> env = hdb.StreamEnvironment(hdb.StreamingConfig(state_backend=hdb.StateBackend.memory(max_size_bytes=1000)))
    >>> rows = env.from_iterable([{"k": i, "ts": i} for i in range(1000)]).with_watermark("ts")
    >>> _ = rows.join(rows, on="k", between=(0, 3600)).name("self-join").sink(hdb.sinks.memory())
    >>> try:
    ...     env.execute(name="doc-state-limit")
    ... except hdb.StateLimitError as e:
    ...     print(e.step, "|", str(e)[:31], "...", "over the memory backend's bound of 1,000 bytes" in str(e))
    self-join | step 'self-join': join state is ... True
    """

    def __init__(self, message: str, step: str = ""):
        super().__init__(message)
        self.step = step


class DataError(HeliosError, ValueError):
    """A record or value cannot be processed (e.g. a timestamp outside the supported range)."""


class RecordError(ExecutionError):
    """A per-event function (``map``/``filter``/``process``) failed on one record.

    ``step`` names the step, ``index`` is the record's 0-based position in the input of the
    operator that ran it (a compiled function runs inside its stage's fused kernel, so that is
    the kernel's input), and ``record`` holds its fields.  The Python exception the function
    raised (or, for a compiled function, the one Python would have raised) is chained as
    ``__cause__``.
    """

    def __init__(self, message: str, step: str = "", index: int = -1, record: object = None):
        super().__init__(message)
        self.step = step
        self.index = index
        self.record = record


class PythonFallbackWarning(UserWarning):
    """A per-event Python function could not be compiled and runs record by record in Python.

    Emitted once per step; the message names the step and the construct that prevented
    compilation.
    """


class CheckpointError(HeliosError, RuntimeError):
    """A checkpoint could not be written or restored (names the job, epoch and file)."""
