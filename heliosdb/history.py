"""A job's metrics over time: what ``JobHandle.history()`` and ``JobResult.history`` hold.

While a job runs, the thread that waits for its tasks (``{job}:join``) samples the job's
counters every ``interval_s`` (half a second by default, ``StreamingConfig(
metrics_sample_interval=)``), once at the start and once more when the job has ended; the
job's own threads do nothing for it.  Each sample is a row: cumulative counts, gauges, and the
rates, latency quantiles and backpressure of the interval since the previous row.  The rows are
bounded: past ``max_samples`` the older half is thinned to every other row, so a long job keeps
its recent past in full and its distant past coarser.

Columns (:data:`SCHEMA`): ``t_s`` (seconds since the start), ``time`` (wall clock), ``events``
(read from the source so far), ``events_out`` (into sinks so far), ``events_per_s``,
``latency_p50_ms`` and ``latency_p99_ms`` (end-to-end, over the interval; null when no event
reached a sink in it), ``watermark`` (the job's event-time watermark; null without event
time), ``watermark_lag_ms`` (wall clock minus watermark), ``late_events`` (so far),
``backpressure`` (the largest fraction of the interval a task was blocked on a full channel),
``state_bytes``, ``checkpoints`` (so far).

Examples
--------
>>> import heliosdb as hdb
>>> env = hdb.StreamEnvironment()
>>> _ = env.generate(count=100_000).sink(hdb.sinks.memory())
>>> history = env.execute(name="doc-history").history
>>> table = history.to_arrow()
>>> table.column_names[:5], table["events"][-1].as_py()
(['t_s', 'time', 'events', 'events_out', 'events_per_s'], 100000)
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

import pyarrow as pa

from ._optional import require
from .display import fraction, seconds, table_html
from .errors import ConfigError
from .histograms import LatencyHistogram
from .metrics import JobMetrics, Sample, task_fractions

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Seconds between samples unless configured.
DEFAULT_INTERVAL_S = 0.5
#: Rows kept at most (past it, the older half is thinned).
DEFAULT_MAX_SAMPLES = 2048

_TS = pa.timestamp("ms", tz="UTC")
SCHEMA = pa.schema([
    ("t_s", pa.float64()), ("time", _TS), ("events", pa.int64()), ("events_out", pa.int64()),
    ("events_per_s", pa.float64()), ("latency_p50_ms", pa.float64()), ("latency_p99_ms", pa.float64()),
    ("watermark", _TS), ("watermark_lag_ms", pa.float64()), ("late_events", pa.int64()),
    ("backpressure", pa.float64()), ("state_bytes", pa.int64()), ("checkpoints", pa.int64()),
])
COLUMNS = tuple(SCHEMA.names)

#: What ``plot()`` draws by default, one panel each (a tuple shares a panel); the watermark
#: lag only for a job with event time.
DEFAULT_PANELS: Tuple[Tuple[str, ...], ...] = (("events_per_s",), ("latency_p50_ms", "latency_p99_ms"),
                                              ("backpressure",))
_LABELS = {"events_per_s": "events/s", "latency_p50_ms": "p50", "latency_p99_ms": "p99",
           "latency": "latency (ms)", "backpressure": "backpressure", "watermark_lag_ms": "watermark lag (ms)",
           "state_bytes": "state (bytes)", "late_events": "late events", "events": "events"}

Row = Tuple[object, ...]
Panels = Sequence[Union[str, Sequence[str]]]


class MetricsHistory:
    """A job's metrics sampled over time (see the module docstring); safe to read while the
    job runs.

    ``interval_s`` is the time between samples, ``max_samples`` the most rows kept.

    Examples
    --------
    >>> from heliosdb.metrics import JobMetrics
    >>> history = MetricsHistory("doc", interval_s=1.0)
    >>> history.record(JobMetrics("doc"))
    >>> len(history), history.to_pandas().shape[1], history.to_polars().height
    (1, 13, 1)
    """

    def __init__(self, job: str, interval_s: float = DEFAULT_INTERVAL_S,
                 max_samples: int = DEFAULT_MAX_SAMPLES) -> None:
        if not interval_s > 0:
            raise ConfigError(f"the metrics sample interval must be positive seconds, got {interval_s!r}")
        if max_samples < 4:
            raise ConfigError(f"a metrics history keeps at least 4 samples, got max_samples={max_samples!r}")
        self.job = job
        self.interval_s = float(interval_s)
        self.max_samples = max_samples
        self._rows: List[Row] = []
        self._prev: Optional[Sample] = None     # the last row's sample
        self._base: Optional[Sample] = None     # the sample the last row's rates start from
        self._lock = threading.Lock()

    # -- sampling (the job's join thread) ------------------------------------------------------
    def record(self, jm: JobMetrics) -> None:
        """Add a row: ``jm``'s figures now, rates and quantiles since the previous row.  A
        row less than half an interval after the previous one (the final one, often) replaces
        it, its rates reaching back to where that one's started: a rate over a few
        milliseconds is noise."""
        now = jm.record()
        prev = self._prev
        start_ns = int(jm.started * 1e9)
        with self._lock:
            merge = (prev is not None and len(self._rows) >= 2
                     and now.t_ns - prev.t_ns < self.interval_s * 5e8)
            if merge:
                self._rows.pop()
                prev = self._base
        if prev is None:
            prev = Sample(start_ns, 0, {n: (0, 0, 0, 0, 0) for n in now.tasks}, {})
        dt = (now.t_ns - prev.t_ns) / 1e9
        self._prev, self._base = now, prev
        assert now.latency is not None
        p50, p99 = (LatencyHistogram.quantile_between(prev.latency, now.latency, q) for q in (0.5, 0.99))
        blocked = max((f["blocked"] for f in task_fractions(prev, now).values()), default=0.0)
        wall_ns = time.time_ns()
        wm = jm.watermark()
        state_ops = list(jm.state_ops)
        row = (
            max(now.t_ns - start_ns, 0) / 1e9, wall_ns // 1_000_000, now.events_in,
            sum(s.rows_in for s in list(jm.operators.values()) if s.kind.endswith("sink")),
            (now.events_in - prev.events_in) / dt if dt > 0 else 0.0,
            None if p50 != p50 else p50, None if p99 != p99 else p99,
            None if wm is None else wm // 1_000_000, None if wm is None else (wall_ns - wm) / 1e6,
            sum(op.late_events for op in state_ops), fraction(blocked),
            sum(op.state_size_bytes() for op in state_ops), jm.checkpoints.count,
        )
        with self._lock:
            self._rows.append(row)
            if len(self._rows) > self.max_samples:
                half = len(self._rows) // 2
                self._rows = self._rows[:half:2] + self._rows[half:]

    def follow(self, jm: JobMetrics, threads: Sequence[threading.Thread]) -> None:
        """Wait for ``threads`` to end, recording a row at once and then every ``interval_s``
        (the job's join thread runs this; the caller records the final row)."""
        self.record(jm)
        next_at = time.monotonic() + self.interval_s
        for t in threads:
            while True:
                t.join(max(next_at - time.monotonic(), 0.0))
                if not t.is_alive():
                    break
                now = time.monotonic()
                if now >= next_at:
                    self.record(jm)
                    next_at = max(next_at + self.interval_s, now + self.interval_s / 2)

    # -- reading ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._rows)

    def rows(self) -> List[Row]:
        """The rows so far (a copy), in :data:`COLUMNS` order."""
        with self._lock:
            return list(self._rows)

    def to_arrow(self) -> pa.Table:
        """The samples so far as a pyarrow Table (:data:`SCHEMA`)."""
        rows = self.rows()
        cols = list(zip(*rows)) if rows else [()] * len(COLUMNS)
        return pa.table([pa.array(c, type=f.type) for c, f in zip(cols, SCHEMA)], schema=SCHEMA)

    def to_pandas(self):
        """The samples so far as a pandas DataFrame."""
        return self.to_arrow().to_pandas()

    def to_polars(self):
        """The samples so far as a polars DataFrame."""
        import polars as pl

        return pl.from_arrow(self.to_arrow())

    def plot(self, columns: Optional[Panels] = None, ax: "Union[Axes, Sequence[Axes], None]" = None) -> "Figure":
        """Chart the samples over time: one panel per column (a tuple of columns shares a
        panel), sharing the time axis; returns the matplotlib figure (in a notebook, a cell
        that ends with it shows it).

        By default: events/s, latency p50 and p99, backpressure, and the watermark lag when
        the job has event time.  ``ax``: draw into these axes (one per panel), or all panels
        into one.

        Examples
        --------
        >>> import matplotlib; matplotlib.use("Agg")
        >>> h = MetricsHistory("doc")
        >>> fig = h.plot()
        >>> [a.get_ylabel() for a in fig.axes]
        ['events/s', 'latency (ms)', 'backpressure']
        """
        require("matplotlib", "notebook", "MetricsHistory.plot()")
        table = self.to_arrow()
        panels = self._panels(columns, table)
        if ax is None:
            import matplotlib.pyplot as plt

            fig, grid = plt.subplots(len(panels), 1, sharex=True, squeeze=False,
                                     figsize=(8, 1.2 + 1.8 * len(panels)))
            plt.close(fig)           # returned, not also shown by pyplot at the cell's end
            axes = list(grid[:, 0])
        else:
            axes = list(ax) if isinstance(ax, (list, tuple)) else [ax] * len(panels)
            if len(axes) != len(panels):
                raise ConfigError(f"plot(ax=) got {len(axes)} axes for {len(panels)} panels {panels}; "
                                  "pass one axes per panel, or a single one for all")
            fig = axes[0].figure
        t = table["t_s"].to_numpy()
        for panel, a in zip(panels, axes):
            for col in panel:
                a.plot(t, table[col].to_numpy(zero_copy_only=False), label=_LABELS.get(col, col))
            label = "latency (ms)" if all(c.startswith("latency_") for c in panel) else _LABELS.get(panel[0], panel[0])
            a.set_ylabel(label)
            if panel == ("backpressure",):
                a.set_ylim(-0.05, 1.05)
            if len(panel) > 1:
                a.legend(loc="upper right", fontsize="small")
            a.grid(True, alpha=0.3)
        axes[-1].set_xlabel("seconds since start")
        if ax is None:
            fig.suptitle(f"job {self.job!r}")
        return fig

    def _panels(self, columns: Optional[Panels], table: pa.Table) -> List[Tuple[str, ...]]:
        if columns is None:
            panels = list(DEFAULT_PANELS)
            if table.num_rows and table["watermark_lag_ms"].null_count < table.num_rows:
                panels.append(("watermark_lag_ms",))
            return panels
        out = []
        for c in ([columns] if isinstance(columns, str) else columns):
            panel = (c,) if isinstance(c, str) else tuple(c)
            unknown = [x for x in panel if x not in COLUMNS or x == "t_s"]
            if unknown or not panel:
                raise ConfigError(f"plot(columns=): no column {unknown or panel!r} to plot; the columns "
                                  f"are {', '.join(COLUMNS[1:])}")
            out.append(panel)
        return out

    def __repr__(self) -> str:
        rows = self.rows()
        span = f" over {seconds(float(rows[-1][0]))}" if rows else ""   # type: ignore[arg-type]
        return f"<MetricsHistory of job {self.job!r}: {len(rows)} samples{span}, every {self.interval_s:g} s>"

    def _repr_html_(self, last: int = 10) -> str:
        table = self.to_arrow()
        shown = table.slice(max(table.num_rows - last, 0))
        names = [n for n in COLUMNS if n != "time"]
        rows = zip(*(shown[n].to_pylist() for n in names)) if shown.num_rows else []
        caption = (f"job {self.job!r}: {table.num_rows} samples, every {self.interval_s:g} s"
                   + (f" (the last {shown.num_rows})" if shown.num_rows < table.num_rows else ""))
        return f'<div class="heliosdb">{table_html(names, rows, caption)}</div>'
