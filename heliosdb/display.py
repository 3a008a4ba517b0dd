"""How figures look to a person: numbers as short text, small HTML tables, and whether we run
inside a Jupyter notebook.

Everything here is formatting, shared by the notebook displays of :mod:`heliosdb.metrics` (a
metrics snapshot), :mod:`heliosdb.history` (the sampled time series), :mod:`heliosdb.progress`
(the live display) and :mod:`heliosdb.runtime.job` (results and handles).  It imports nothing
of the engine, so any of them may use it.  HTML is escaped here, once; every table is a plain
``<table>`` with a class name a stylesheet can target (``heliosdb``).

Examples
--------
>>> print(figures_text({"events": "1,000", "events/s": "500"}))
events 1,000 · events/s 500
>>> table_html(["a"], [["<b>"]])
'<table class="heliosdb"><thead><tr><th>a</th></tr></thead><tbody><tr><td>&lt;b&gt;</td></tr></tbody></table>'
"""
from __future__ import annotations

import html
import math
import sys
from datetime import datetime, timezone
from typing import Dict, Iterable, Mapping, Optional, Sequence

#: The status a job display shows, and its colour.
STATUS_COLOURS = {"running": "#1f77b4", "stopping": "#ff7f0e", "done": "#2ca02c",
                  "stopped": "#7f7f7f", "failed": "#d62728"}


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (an IPython ``ZMQInteractiveShell``), where
    displays can be updated in place.  IPython is not imported for this.

    >>> in_notebook()
    False
    """
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    ip = shell.get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


# -- numbers -----------------------------------------------------------------------------------
def fraction(x: float) -> float:
    """``x`` clamped to [0, 1], never negative zero (a fraction of time from two readings).

    >>> fraction(-1e-9), fraction(1.2), fraction(0.25)
    (0.0, 1.0, 0.25)
    """
    if x != x:                       # NaN: nothing was measured
        return 0.0
    return min(max(x, 0.0), 1.0) + 0.0


def count(n: Optional[float]) -> str:
    """A count with thousands separators ("-" for none).

    >>> count(1234567), count(None)
    ('1,234,567', '-')
    """
    return "-" if n is None or n != n else f"{n:,.0f}"


def ms(v: Optional[float]) -> str:
    """A latency in ms ("-" for none: no event was measured).

    >>> ms(2.113), ms(float("nan")), ms(1234.5)
    ('2.1 ms', '-', '1,234.5 ms')
    """
    return "-" if v is None or v != v else f"{v:,.1f} ms"


def seconds(v: float) -> str:
    """A duration in seconds.

    >>> seconds(3.14159), seconds(125.0)
    ('3.1 s', '2 min 5 s')
    """
    if v >= 120:
        return f"{int(v // 60)} min {int(v % 60)} s"
    return f"{v:,.1f} s"


def percent(x: float) -> str:
    """A fraction as a whole percentage, clamped to 0-100% (never "-0%").

    >>> percent(-0.0001), percent(0.256)
    ('0%', '26%')
    """
    return f"{fraction(x):.0%}"


def nbytes(n: float) -> str:
    """A size in bytes, KiB, MiB or GiB.

    >>> nbytes(512), nbytes(3 * 2**20)
    ('512 B', '3.0 MiB')
    """
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def timestamp(ns: Optional[int]) -> str:
    """An event time (ns since the epoch, UTC) to the millisecond; "-" for none.

    >>> timestamp(1_700_000_000_123_000_000)
    '2023-11-14 22:13:20.123'
    """
    if ns is None:
        return "-"
    t = datetime.fromtimestamp(ns / 1e9, tz=timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S.") + f"{t.microsecond // 1000:03d}"


def cell(v: object) -> str:
    """A table cell's text for any value (floats to 4 significant digits, NaN and None as "-").

    >>> cell(0.123456), cell(None), cell(12), cell(float("nan"))
    ('0.1235', '-', '12', '-')
    """
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return str(v)


# -- text and HTML -----------------------------------------------------------------------------
def figures_text(figures: Mapping[str, str]) -> str:
    """Figures on one line: ``name value`` pairs."""
    return " · ".join(f"{k} {v}" for k, v in figures.items())


def table_html(header: Sequence[str], rows: Iterable[Sequence[object]], caption: str = "") -> str:
    """An escaped HTML table (cells through :func:`cell`)."""
    e = html.escape
    head = "".join(f"<th>{e(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{e(cell(v))}</td>" for v in row) + "</tr>" for row in rows)
    cap = f"<caption>{e(caption)}</caption>" if caption else ""
    return f'<table class="heliosdb">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def figures_html(title: str, figures: Mapping[str, str], status: Optional[str] = None) -> str:
    """A titled one-row table of figures, with a coloured status badge (see
    :data:`STATUS_COLOURS`; the status's first word picks the colour).

    >>> "done" in figures_html("job 'x'", {"events": "10"}, status="done")
    True
    """
    e = html.escape
    badge = ""
    if status is not None:
        colour = STATUS_COLOURS.get(status.split(":")[0].split()[0] if status else "", "#7f7f7f")
        badge = (f' <span style="background:{colour};color:white;border-radius:3px;'
                 f'padding:0 4px">{e(status)}</span>')
    head = "".join(f"<th>{e(k)}</th>" for k in figures)
    row = "".join(f'<td style="text-align:right">{e(v)}</td>' for v in figures.values())
    return (f'<div class="heliosdb"><b>{e(title)}</b>{badge}'
            f'<table class="heliosdb"><thead><tr>{head}</tr></thead><tbody><tr>{row}</tr></tbody>'
            "</table></div>")


def job_figures(m: Mapping[str, object]) -> Dict[str, str]:
    """The figures a person watches, from a metrics snapshot (``JobHandle.metrics()``): recent
    rate and p99 while it runs, so they move with the job.

    >>> from heliosdb.metrics import JobMetrics
    >>> f = job_figures(JobMetrics("doc", started=0.0, clock=lambda: 2_000_000_000).snapshot())
    >>> f["elapsed"], f["events"], f["p99 (recent)"], f["watermark"]
    ('2.0 s', '0', '-', '-')
    """
    wm = m.get("watermark_ns")
    lag = m.get("watermark_lag_ms")
    watermark = timestamp(wm) if isinstance(wm, int) else "-"  # type: ignore[arg-type]
    if isinstance(lag, (int, float)) and lag == lag:
        watermark += f" (lag {lag / 1e3:,.1f} s)" if lag >= 10_000 else f" (lag {lag:,.0f} ms)"
    return {
        "elapsed": seconds(float(m.get("elapsed_s", 0.0))),                       # type: ignore[arg-type]
        "events": count(m.get("streaming_events_processed_total", 0)),           # type: ignore[arg-type]
        "events/s (recent)": count(m.get("events_per_s_recent", 0.0)),           # type: ignore[arg-type]
        "p99 (recent)": ms(m.get("latency_recent_p99_ms")),                      # type: ignore[arg-type]
        "watermark": watermark,
        "late": count(m.get("streaming_late_events_total", 0)),                  # type: ignore[arg-type]
        "backpressure": percent(float(m.get("backpressure_recent", 0.0))),       # type: ignore[arg-type]
        "checkpoints": count(m.get("streaming_checkpoints_total", 0)),           # type: ignore[arg-type]
        "state": nbytes(float(m.get("streaming_state_size_bytes", 0))),          # type: ignore[arg-type]
    }


def snapshot_html(m: Mapping[str, object]) -> str:
    """A metrics snapshot (``JobHandle.metrics()``) as HTML: the job's figures (whole run and
    recent), then one row per operator.

    >>> from heliosdb.metrics import JobMetrics
    >>> "events/s (recent)" in snapshot_html(JobMetrics("doc").snapshot())
    True
    """
    g = m.get
    dead = g("streaming_dead_letters_total") or {}
    figures = {
        "elapsed": seconds(float(g("elapsed_s", 0.0))),                                  # type: ignore[arg-type]
        "events": count(g("streaming_events_processed_total", 0)),                       # type: ignore[arg-type]
        "events/s": count(g("events_per_s", 0.0)),                                       # type: ignore[arg-type]
        "events/s (recent)": count(g("events_per_s_recent", 0.0)),                       # type: ignore[arg-type]
        "p50": ms(g("latency_p50_ms")),                                                  # type: ignore[arg-type]
        "p99": ms(g("latency_p99_ms")),                                                  # type: ignore[arg-type]
        "p99 (recent)": ms(g("latency_recent_p99_ms")),                                  # type: ignore[arg-type]
        "backpressure (recent)": percent(float(g("backpressure_recent", 0.0))),          # type: ignore[arg-type]
        "late": count(g("streaming_late_events_total", 0)),                              # type: ignore[arg-type]
        "dead letters": count(sum(dead.values()) if isinstance(dead, Mapping) else 0),
        "checkpoints": count(g("streaming_checkpoints_total", 0)),                       # type: ignore[arg-type]
        "state": nbytes(float(g("streaming_state_size_bytes", 0))),                      # type: ignore[arg-type]
    }
    status = None if "running" not in m else ("running" if m["running"] else "done")
    out = figures_html(f"job {g('job', '')!r}", figures, status)
    ops = g("operators") or {}
    if isinstance(ops, Mapping) and ops:
        rows = [[name, o.get("kind"), o.get("task"), count(o.get("rows_in")), count(o.get("rows_out")),
                 count(o.get("batches")), f"{o.get('busy_s', 0.0):,.3f}", ms(o.get("latency_p99_ms"))]
                for name, o in ops.items()]
        out += table_html(["operator", "kind", "task", "rows in", "rows out", "batches", "busy s",
                           "batch p99"], rows)
    return out
