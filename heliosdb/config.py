"""Configuration objects and every default and environment variable of the engine.

``StreamingConfig`` is what a job is built with; the other classes are its parts.  All of them are
frozen dataclasses validated on construction, so a bad value fails where it is written.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Optional, Union

from ._optional import require, require_storage
from .errors import ConfigError

Duration = Union[timedelta, int, float]
"""A duration: a ``timedelta``, or a number of seconds."""

# ---------------------------------------------------------------------------------------------
# Defaults (the user guide's values) and environment variables
# ---------------------------------------------------------------------------------------------
DEFAULT_BUFFER_SIZE = 10_000
DEFAULT_BATCH_SIZE = 65_536
DEFAULT_BATCH_TIMEOUT = timedelta(milliseconds=100)
DEFAULT_MEMORY_STATE_BYTES = 8 * 2**30
DEFAULT_SLOW_BATCH_WARNING = timedelta(seconds=1)
#: Prometheus exposition: the usual port of Python exporters, on the loopback interface only.
DEFAULT_METRICS_PORT = 9464
DEFAULT_METRICS_HOST = "127.0.0.1"
#: Busy / blocked / idle fractions and the backpressure flag cover this trailing window.
DEFAULT_METRICS_WINDOW = timedelta(seconds=10)
#: A job's metrics history (``JobHandle.history()``) takes a sample this often.
DEFAULT_METRICS_SAMPLE_INTERVAL = timedelta(milliseconds=500)
#: explain()'s state estimate assumes this many payload bytes per value of a string or binary
#: column (its schema does not say); fixed-width columns use their exact width.
DEFAULT_VARIABLE_WIDTH_BYTES = 16
#: Kafka (connectors/kafka.py): where clients connect when no bootstrap_servers= is given
#: ($HELIOSDB_KAFKA_BOOTSTRAP first; the test services set it), how long a source waits for the
#: cluster at start (topics, committed and log offsets; kafka_source(startup_timeout=)), the rows a source buffers per partition before pausing it, and the exactly-
#: once sink's commit interval (until checkpoints drive commits) and transaction timeout floor.
ENV_KAFKA_BOOTSTRAP = "HELIOSDB_KAFKA_BOOTSTRAP"
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_KAFKA_STARTUP_TIMEOUT = timedelta(seconds=30)
DEFAULT_KAFKA_PARTITION_BUFFER_ROWS = 262_144
#: Watermark alignment: a split this far (event time) ahead of the slowest one is paused.
DEFAULT_MAX_DRIFT = timedelta(minutes=5)
DEFAULT_KAFKA_COMMIT_INTERVAL = timedelta(seconds=10)
DEFAULT_KAFKA_TRANSACTION_TIMEOUT = timedelta(seconds=60)

#: Where generated kernels and Numba's on-disk cache live.
ENV_CACHE_DIR = "HELIOSDB_CACHE_DIR"
#: Set to "0" to disable Numba's on-disk cache (every process compiles afresh).
ENV_NUMBA_CACHE = "HELIOSDB_NUMBA_CACHE"
#: Set to "0" to run every stateless operator as its own kernel (used to measure the fusion gain).
ENV_FUSION = "HELIOSDB_FUSION"
#: Set to "0" to turn off per-batch operator timing (operator latency, busy time, batch sizes);
#: used to measure what metrics cost.  Event counts, end-to-end latency and backpressure stay.
ENV_METRICS = "HELIOSDB_METRICS"


def cache_dir() -> Path:
    """The directory for generated kernel sources and the Numba cache.

    ``$HELIOSDB_CACHE_DIR`` if set, else ``~/.cache/heliosdb``.
    """
    root = os.environ.get(ENV_CACHE_DIR) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "heliosdb",
    )
    return Path(root)


def numba_cache_enabled() -> bool:
    """Whether compiled kernels are cached on disk (``$HELIOSDB_NUMBA_CACHE``, default on)."""
    return os.environ.get(ENV_NUMBA_CACHE, "1") not in ("0", "false", "no", "off")


def fusion_enabled() -> bool:
    """Whether consecutive stateless operators are fused into one kernel (default on)."""
    return os.environ.get(ENV_FUSION, "1") not in ("0", "false", "no", "off")


def kafka_bootstrap(servers: Optional[str]) -> str:
    """Kafka's ``bootstrap_servers``: ``servers``, else ``$HELIOSDB_KAFKA_BOOTSTRAP``, else
    ``127.0.0.1:9092``.

    >>> kafka_bootstrap("broker:9092")
    'broker:9092'
    """
    return servers or os.environ.get(ENV_KAFKA_BOOTSTRAP) or DEFAULT_KAFKA_BOOTSTRAP


def operator_metrics_enabled() -> bool:
    """Whether operators are timed per batch (``$HELIOSDB_METRICS``, default on)."""
    return os.environ.get(ENV_METRICS, "1") not in ("0", "false", "no", "off")


def to_nanos(value: Duration, what: str) -> int:
    """Convert a duration given at the API (``timedelta`` or seconds) to int nanoseconds.

    >>> to_nanos(timedelta(milliseconds=5), "batch_timeout")
    5000000
    """
    if isinstance(value, timedelta):
        return (value.days * 86_400 + value.seconds) * 1_000_000_000 + value.microseconds * 1_000
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(
            f"{what} must be a datetime.timedelta or a number of seconds, got {value!r}"
        )
    return int(round(value * 1_000_000_000))


def _positive_int(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class StateBackend:
    """Where keyed state lives: ``memory()`` (columnar accumulator arrays) or ``rocksdb()``.

    Examples
    --------
    >>> StateBackend.memory(max_size_bytes=2**30).kind
    'memory'
    >>> StateBackend.rocksdb(path="/tmp/helios-rocks").kind
    'rocksdb'
    """

    kind: str = "memory"
    max_size_bytes: int = DEFAULT_MEMORY_STATE_BYTES
    path: Optional[str] = None
    block_cache_size: int = 256 * 2**20
    write_buffer_size: int = 64 * 2**20

    def __post_init__(self) -> None:
        if self.kind not in ("memory", "rocksdb"):
            raise ConfigError(f"state backend {self.kind!r} is not available; use StateBackend.memory() or .rocksdb()")
        _positive_int(self.max_size_bytes, f"StateBackend.{self.kind}(max_size_bytes=)")
        if self.kind == "rocksdb":
            if not isinstance(self.path, str) or not self.path:
                raise ConfigError("StateBackend.rocksdb(path=) needs a local directory for the working state")
            _positive_int(self.block_cache_size, "StateBackend.rocksdb(block_cache_size=)")
            _positive_int(self.write_buffer_size, "StateBackend.rocksdb(write_buffer_size=)")
            require("rocksdict", "rocksdb", "StateBackend.rocksdb()")

    @classmethod
    def memory(cls, max_size_bytes: int = DEFAULT_MEMORY_STATE_BYTES) -> "StateBackend":
        """Keyed state in columnar in-memory accumulator arrays, bounded by ``max_size_bytes``."""
        return cls("memory", max_size_bytes)

    @classmethod
    def rocksdb(cls, path: str, block_cache_size: int = 256 * 2**20, write_buffer_size: int = 64 * 2**20,
                max_size_bytes: int = DEFAULT_MEMORY_STATE_BYTES) -> "StateBackend":
        """Accumulators in RocksDB (through ``rocksdict``) under ``path``, so keyed state can
        outgrow memory: only the key index stays in memory (bounded by ``max_size_bytes``).
        The database is working state, recreated at every start; checkpoints are the same
        Parquet files as with ``memory()``, so state moves freely between backends."""
        return cls("rocksdb", max_size_bytes, path, block_cache_size, write_buffer_size)


@dataclass(frozen=True)
class MetricsConfig:
    """Serve the job's Prometheus metrics over HTTP at ``http://{host}:{port}/metrics``.

    Parameters
    ----------
    port
        TCP port; ``0`` picks a free one (read it from ``env.metrics_url``).
    host
        Interface to bind; the loopback interface by default, so nothing is exposed beyond
        the machine unless asked for (``"0.0.0.0"``).
    window
        Busy, blocked and idle fractions, and the backpressure flag, cover this trailing
        window (cumulative counters are exported too, for ``rate()`` in Prometheus).

    Examples
    --------
    >>> MetricsConfig(port=0).host
    '127.0.0.1'
    >>> MetricsConfig(port=70000)
    Traceback (most recent call last):
    ...
    heliosdb.errors.ConfigError: MetricsConfig(port=) must be a TCP port 0-65535 (0: any free port), got 70000
    """

    port: int = DEFAULT_METRICS_PORT
    host: str = DEFAULT_METRICS_HOST
    window: Duration = DEFAULT_METRICS_WINDOW

    def __post_init__(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConfigError(
                f"MetricsConfig(port=) must be a TCP port 0-65535 (0: any free port), got {self.port!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ConfigError(f"MetricsConfig(host=) must be an address such as '127.0.0.1', got {self.host!r}")
        if to_nanos(self.window, "MetricsConfig(window=)") <= 0:
            raise ConfigError(f"MetricsConfig(window=) must be positive, got {self.window!r}")

    @property
    def window_ns(self) -> int:
        """``window`` in nanoseconds."""
        return to_nanos(self.window, "window")


@dataclass(frozen=True)
class CheckpointConfig:
    """Periodic checkpoints: every ``interval`` an aligned barrier commits an epoch whose state
    is written as ``compression`` Parquet under ``{storage}/{job}/chk-{epoch:010d}/`` (any fsspec
    URL: a local path, ``file://``, ``memory://``, ``s3://``...) with ``_manifest.json`` last.
    A job started again with the same name and storage restores the newest valid checkpoint.
    ``retain`` checkpoints are kept; one taking longer than ``timeout`` is abandoned (and
    counted as a failure).  ``lease_timeout``: a job whose lease heartbeat is older than this is
    considered dead, so another process may take its job directory over.

    Examples
    --------
    >>> from datetime import timedelta
    >>> CheckpointConfig(interval=timedelta(seconds=10), storage="/tmp/helios-ckpt").retain
    2
    """

    interval: Duration = timedelta(seconds=10)
    storage: str = ""
    compression: str = "zstd"
    retain: int = 2
    timeout: Duration = timedelta(minutes=10)
    storage_options: Optional[dict] = None
    lease_timeout: Duration = timedelta(seconds=10)

    def __post_init__(self) -> None:
        if not isinstance(self.storage, str) or not self.storage:
            raise ConfigError("CheckpointConfig(storage=) needs an fsspec URL or path, e.g. 'file:///tmp/ckpt'")
        require_storage(self.storage, "CheckpointConfig(storage=)")
        for what in ("interval", "timeout", "lease_timeout"):
            if to_nanos(getattr(self, what), f"CheckpointConfig({what}=)") <= 0:
                raise ConfigError(f"CheckpointConfig({what}=) must be positive, got {getattr(self, what)!r}")
        if isinstance(self.retain, bool) or not isinstance(self.retain, int) or self.retain < 1:
            raise ConfigError(f"CheckpointConfig(retain=) must be an integer >= 1, got {self.retain!r}")
        if self.compression not in ("zstd", "snappy", "gzip", "lz4", "none"):
            raise ConfigError(
                f"CheckpointConfig(compression=) must be zstd, snappy, gzip, lz4 or none; got {self.compression!r}"
            )

    @property
    def interval_ns(self) -> int:
        return to_nanos(self.interval, "CheckpointConfig(interval=)")


@dataclass(frozen=True)
class StateConfig:
    """Keyed-state housekeeping: evict keys untouched for ``ttl`` (processing time), checked
    every ``cleanup_interval`` (default: ``ttl``).  Applies to running keyed aggregates
    (``key_by(...).aggregate(...)``); ``.with_state_ttl()`` overrides it per operator.  Window
    state needs no TTL: it is dropped when the watermark passes.

    Examples
    --------
    >>> from datetime import timedelta
    >>> StateConfig(ttl=timedelta(hours=1), cleanup_interval=timedelta(minutes=5)).cleanup_interval_ns
    300000000000
    """

    ttl: Optional[Duration] = None
    cleanup_interval: Optional[Duration] = None

    def __post_init__(self) -> None:
        for what, v in (("ttl", self.ttl), ("cleanup_interval", self.cleanup_interval)):
            if v is not None and to_nanos(v, f"StateConfig({what}=)") <= 0:
                raise ConfigError(f"StateConfig({what}=) must be positive, got {v!r}")

    @property
    def ttl_ns(self) -> Optional[int]:
        return None if self.ttl is None else to_nanos(self.ttl, "StateConfig(ttl=)")

    @property
    def cleanup_interval_ns(self) -> Optional[int]:
        if self.cleanup_interval is None:
            return self.ttl_ns
        return to_nanos(self.cleanup_interval, "StateConfig(cleanup_interval=)")


@dataclass(frozen=True)
class StreamingConfig:
    """How a job runs.

    Parameters
    ----------
    parallelism
        Replicas of each fused stateless stage (fed round-robin, merged back in order) and
        parallel subtasks of each keyed aggregate (tumbling and sliding event-time windows:
        replicas pre-aggregate and one step merges; sessions, processing-time windows and
        running aggregates: a hash exchange on the key); the result is that of 1.  ``None``
        means: keyed aggregates get one less than the core count (at least 1), stateless stages
        one thread (replicas only when asked for: on 2 cores they measured slower).  Override
        per step with ``.set_parallelism(n)``.
    buffer_size
        Events buffered between two stages; a full channel blocks its producer (backpressure).
        A channel always admits one batch, however large.
    batch_size
        Rows per micro-batch: a source's batch is cut when it holds this many rows ...
    batch_timeout
        ... or when its first row has waited this long (so slow sources still flow).
    state_backend
        Where keyed state lives (:class:`StateBackend`).
    state
        Keyed-state TTL (:class:`StateConfig`).
    checkpoint
        Periodic checkpoints and restore (:class:`CheckpointConfig`); ``None``: no checkpoints.
    metrics
        Serve Prometheus metrics over HTTP (:class:`MetricsConfig`); ``None`` serves none (the
        job still keeps them: ``JobHandle.metrics()``, ``diagnose()``).
    freeze_gc
        While jobs run, exempt the objects that existed at start from Python's full garbage
        collections (:func:`gc.freeze`), which otherwise stop every thread for 70-350 ms
        (:mod:`heliosdb.runtime.gcfreeze`); undone when the last job ends.
    metrics_sample_interval
        How often a job samples its metrics into its history (``JobHandle.history()``,
        ``JobResult.plot()``; :mod:`heliosdb.history`).

    Examples
    --------
    >>> from datetime import timedelta
    >>> cfg = StreamingConfig(batch_size=1024, batch_timeout=timedelta(milliseconds=10))
    >>> cfg.batch_timeout_ns
    10000000
    """

    parallelism: Optional[int] = None
    buffer_size: int = DEFAULT_BUFFER_SIZE
    batch_size: int = DEFAULT_BATCH_SIZE
    batch_timeout: Duration = DEFAULT_BATCH_TIMEOUT
    state_backend: StateBackend = field(default_factory=StateBackend.memory)
    slow_batch_warning: Duration = DEFAULT_SLOW_BATCH_WARNING
    state: StateConfig = field(default_factory=StateConfig)
    checkpoint: Optional[CheckpointConfig] = None
    metrics: Optional[MetricsConfig] = None
    freeze_gc: bool = True
    metrics_sample_interval: Duration = DEFAULT_METRICS_SAMPLE_INTERVAL

    def __post_init__(self) -> None:
        if self.parallelism is not None:
            _positive_int(self.parallelism, "StreamingConfig(parallelism=)")
        _positive_int(self.buffer_size, "StreamingConfig(buffer_size=)")
        _positive_int(self.batch_size, "StreamingConfig(batch_size=)")
        if to_nanos(self.batch_timeout, "StreamingConfig(batch_timeout=)") <= 0:
            raise ConfigError(f"StreamingConfig(batch_timeout=) must be positive, got {self.batch_timeout!r}")
        if not isinstance(self.state_backend, StateBackend):
            raise ConfigError(
                "StreamingConfig(state_backend=) must be a StateBackend, e.g. StateBackend.memory(), "
                f"got {self.state_backend!r}"
            )
        if self.checkpoint is not None and not isinstance(self.checkpoint, CheckpointConfig):
            raise ConfigError(f"StreamingConfig(checkpoint=) must be a CheckpointConfig, got {self.checkpoint!r}")
        if not isinstance(self.state, StateConfig):
            raise ConfigError(f"StreamingConfig(state=) must be a StateConfig, got {self.state!r}")
        if self.metrics is not None and not isinstance(self.metrics, MetricsConfig):
            raise ConfigError(
                "StreamingConfig(metrics=) must be a MetricsConfig, e.g. MetricsConfig(port=9464), "
                f"got {self.metrics!r}"
            )
        if to_nanos(self.metrics_sample_interval, "StreamingConfig(metrics_sample_interval=)") <= 0:
            raise ConfigError("StreamingConfig(metrics_sample_interval=) must be positive, got "
                              f"{self.metrics_sample_interval!r}")

    @property
    def effective_parallelism(self) -> int:
        """``parallelism``, or one less than the machine's core count (at least 1) when ``None``."""
        return self.parallelism or max(1, (os.cpu_count() or 1) - 1)

    @property
    def batch_timeout_ns(self) -> int:
        """``batch_timeout`` in nanoseconds."""
        return to_nanos(self.batch_timeout, "batch_timeout")

    @property
    def slow_batch_warning_ns(self) -> int:
        """Batches slower than this are logged at WARNING with their duration."""
        return to_nanos(self.slow_batch_warning, "slow_batch_warning")
