"""Live progress of a running job: throughput, latency, backpressure and the bottleneck.

In a terminal it is a rich live table, in Jupyter an HTML display updated in place, anywhere
else (a log file, CI) one plain line every few seconds.  Every figure is read from the job's
metrics a few times a second (rates and the bottleneck over the last couple of seconds); the
job's threads do no work for it.

>>> import heliosdb as hdb
>>> env = hdb.StreamEnvironment()
>>> _ = env.generate(count=10_000).sink(hdb.sinks.memory())
>>> result = env.execute(name="doc-progress", progress=True)    # doctest: +ELLIPSIS
job 'doc-progress' ...
>>> result.metrics["streaming_events_processed_total"]
10000
"""
from __future__ import annotations

import html
import math
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Protocol

from ._optional import require

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import JobMetrics

class _Job(Protocol):
    metrics: "JobMetrics"


class Watched(Protocol):
    """What :func:`watch` and :func:`read` use of a job handle (a
    :class:`~heliosdb.runtime.executor.JobHandle`): whether the job is done, and its metrics."""

    @property
    def done(self) -> bool: ...

    _job: _Job


#: Rates and the bottleneck shown cover about this much recent time.
RECENT_NS = 2_000_000_000
#: Without a terminal or a notebook, a line this often.
LOG_EVERY_S = 5.0


@dataclass
class Reading:
    """One look at a running job."""

    job: str
    running: bool
    elapsed_s: float
    events: int
    events_per_s: float
    p50_ms: float
    p99_ms: float
    backpressured: bool
    bottleneck: Optional[str]
    state_bytes: int
    late_events: int

    def cells(self) -> dict:
        """The figures as display strings, in display order."""
        ms = (lambda v: "-" if math.isnan(v) else f"{v:,.1f} ms")
        bp = "no"
        if self.backpressured:
            bp = f"yes: {self.bottleneck}" if self.bottleneck else "yes"
        return {"elapsed": f"{self.elapsed_s:,.1f} s", "events": f"{self.events:,}",
                "events/s": f"{self.events_per_s:,.0f}", "p50": ms(self.p50_ms), "p99": ms(self.p99_ms),
                "backpressure": bp, "state": _bytes(self.state_bytes), "late": f"{self.late_events:,}"}

    def text(self) -> str:
        state = "running" if self.running else "done"
        return f"job {self.job!r} {state}: " + "  ".join(f"{k} {v}" for k, v in self.cells().items())

    def html(self) -> str:
        cells = self.cells()
        head = "".join(f"<th>{html.escape(k)}</th>" for k in cells)
        row = "".join(f"<td>{html.escape(v)}</td>" for v in cells.values())
        state = "running" if self.running else "done"
        return (f"<div><b>{html.escape(self.job)}</b> ({state})<table><tr>{head}</tr>"
                f"<tr>{row}</tr></table></div>")

    def rich(self):
        from rich.table import Table

        t = Table(title=f"{self.job} ({'running' if self.running else 'done'})", header_style="bold")
        cells = self.cells()
        for k in cells:
            t.add_column(k, justify="left" if k == "backpressure" else "right")
        t.add_row(*cells.values())
        return t


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def read(handle: Watched) -> Reading:
    """A :class:`Reading` of ``handle``'s job now."""
    return reading(handle._job.metrics)


def reading(jm: "JobMetrics") -> Reading:
    """A :class:`Reading` of a job's metrics now (at ``jm.clock()``): the rate and the
    bottleneck over the last :data:`RECENT_NS` or so, counts and latency over the whole run.

    Examples
    --------
    >>> from heliosdb.metrics import JobMetrics
    >>> r = reading(JobMetrics("doc-job", started=0.0, clock=lambda: 2_000_000_000))
    >>> print(r.text())
    job 'doc-job' running: elapsed 2.0 s  events 0  events/s 0  p50 -  p99 -  backpressure no  state 0 B  late 0
    """
    from .diagnosis import diagnose_job

    then, now = jm.recent(RECENT_NS)
    d = diagnose_job(jm, then, now)
    dt = (now.t_ns - then.t_ns) / 1e9
    rate = (now.events_in - then.events_in) / dt if dt > 0 else jm.events_in / max(jm.elapsed(), 1e-9)
    state_ops = list(jm.state_ops)
    return Reading(jm.job, jm.running, jm.elapsed(), jm.events_in, rate,
                   jm.latency.quantile(0.5), jm.latency.quantile(0.99), d.backpressured, d.bottleneck,
                   sum(op.state_size_bytes() for op in state_ops),
                   sum(op.late_events for op in state_ops))


def _mode() -> str:
    shell = sys.modules.get("IPython")
    if shell is not None:
        ip = shell.get_ipython()
        if ip is not None and type(ip).__name__ == "ZMQInteractiveShell":
            return "notebook"
    from rich.console import Console

    return "terminal" if Console().is_terminal else "log"


def watch(handle: Watched, refresh_s: float = 0.5, timeout: Optional[float] = None,
          mode: Optional[str] = None, *, clock: Callable[[], int] = time.monotonic_ns,
          sleep: Callable[[float], None] = time.sleep) -> Reading:
    """Show ``handle``'s progress until the job ends (or ``timeout`` seconds); the last reading.

    ``mode`` is "terminal" (rich), "notebook" (IPython display) or "log" (plain lines);
    by default it is detected.  ``clock`` (ns) and ``sleep`` (seconds) pace the refreshes,
    the log lines and the timeout; a test passes a clock that ``sleep`` moves.
    """
    mode = mode or _mode()
    if mode == "notebook":
        require("IPython.display", "notebook", "watch(mode='notebook')")
    deadline = None if timeout is None else clock() + int(timeout * 1e9)

    def waiting() -> bool:
        return not handle.done and (deadline is None or clock() < deadline)

    if mode == "notebook":
        from IPython.display import HTML, display

        shown = display(HTML(read(handle).html()), display_id=True)
        while waiting():
            sleep(refresh_s)
            shown.update(HTML(read(handle).html()))
        last = read(handle)
        shown.update(HTML(last.html()))
        return last
    if mode == "terminal":
        from rich.live import Live

        with Live(read(handle).rich(), refresh_per_second=max(1.0, 1 / refresh_s)) as live:
            while waiting():
                sleep(refresh_s)
                live.update(read(handle).rich())
            last = read(handle)
            live.update(last.rich())
        return last
    every_ns = int(LOG_EVERY_S * 1e9)
    next_line = clock() + every_ns
    while waiting():
        sleep(min(refresh_s, LOG_EVERY_S))
        if clock() >= next_line:
            print(read(handle).text(), flush=True)
            next_line += every_ns
    last = read(handle)
    print(last.text(), flush=True)
    return last
