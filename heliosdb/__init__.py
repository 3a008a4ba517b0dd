"""HeliosDB Streaming: a columnar micro-batch stream processing engine with compiled kernels.

>>> import heliosdb as hdb
>>> from heliosdb import col
>>> env = hdb.StreamEnvironment()
>>> env.from_iterable([{"v": 0.1}, {"v": 0.7}]).filter(col("v") > 0.2).collect().num_rows
1
"""
from . import log as _log  # noqa: F401 - the NullHandler: nothing printed unless logging is set up
from . import sinks
from ._version import __version__
from .connectors.table import TableSpec, table
from .config import (CheckpointConfig, MetricsConfig, StateBackend, StateConfig,
                     StreamingConfig)
from .diagnosis import Diagnosis
from .environment import StreamEnvironment
from .errors import (CheckpointError, ConfigError, DataError, ExecutionError, HeliosError,
                     PlanError, PythonFallbackWarning, RecordError, SchemaError, StateLimitError)
from .expr import Expr, col, lit
from . import aggregates as _aggregates
from .aggregates import AggSpec
from .plan import Plan
from .runtime.executor import JobHandle, JobResult
from .stream import KeyedStream, Stream, WindowedStream
from . import windows as _windows
from .windows import *  # noqa: F401,F403 - every window spec of heliosdb/windows/ (TumblingWindow, ...)


__all__ = [
    "__version__",
    "StreamEnvironment", "StreamingConfig", "StateBackend", "Stream", "KeyedStream",
    "WindowedStream", "StateConfig", "CheckpointConfig", "col",
    "lit",
    "Expr", "AggSpec", "sinks", "JobHandle", "JobResult", "Plan", "HeliosError", "ConfigError",
    "SchemaError", "PlanError", "ExecutionError", "DataError", "CheckpointError", "MetricsConfig", "Diagnosis",
    "RecordError", "PythonFallbackWarning", "StateLimitError", "table", "TableSpec",
    *_windows.__all__,
]

# Every aggregate's constructor (hdb.count(), hdb.sum("v"), ...): one per module of
# heliosdb/aggregates/, found there, never listed here.
globals().update(_aggregates.constructors())
__all__ += list(_aggregates.constructors())


def __getattr__(name: str):
    """Aggregates discovered after import (``heliosdb.aggregates.discover()``)."""
    fn = _aggregates.constructors().get(name)
    if fn is None:
        raise AttributeError(f"module 'heliosdb' has no attribute {name!r}")
    return fn
