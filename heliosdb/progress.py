"""Live progress of a running job: throughput, latency, backpressure and the bottleneck.

In a terminal it is a rich live table, in Jupyter a display updated in place
(:class:`LiveDisplay`: status, events, recent events/s and p99, watermark, late events,
backpressure, checkpoints, state; ``text/html`` with a ``text/plain`` twin), anywhere else (a
log file, CI) one plain line every few seconds.  Every figure is read from the job's metrics a
few times a second; the job's threads do no work for it.  Between refreshes the watcher waits
for the job's end, so a short job is not held up by the display.

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
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Protocol, Set

from ._optional import require
from .display import figures_html, figures_text, in_notebook, job_figures

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import JobMetrics

log = logging.getLogger("heliosdb.progress")


class _Job(Protocol):
    metrics: "JobMetrics"
    interrupt_hooks: List[Callable[[], None]]


class Watched(Protocol):
    """What :func:`watch`, :func:`read` and :class:`LiveDisplay` use of a job handle (a
    :class:`~heliosdb.runtime.executor.JobHandle`): whether the job is done, its status, a
    wait for its end, and its metrics."""

    @property
    def done(self) -> bool: ...

    @property
    def status(self) -> str: ...

    def join(self, timeout: Optional[float] = None) -> bool: ...

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


def bundle(handle: Watched) -> Dict[str, str]:
    """The job's state now as a display bundle: ``text/plain`` (one line) and ``text/html``.

    Examples
    --------
    >>> import heliosdb as hdb
    >>> env = hdb.StreamEnvironment()
    >>> _ = env.generate(count=1000).sink(hdb.sinks.memory())
    >>> handle = env.execute_async(name="doc-bundle"); _ = handle.wait()
    >>> print(bundle(handle)["text/plain"])                          # doctest: +ELLIPSIS
    job 'doc-bundle' done: elapsed ... · events 1,000 · events/s (recent) ... · checkpoints 0 · state 0 B
    """
    jm = handle._job.metrics
    figures, status = job_figures(jm.snapshot()), handle.status
    return {"text/plain": f"job {jm.job!r} {status}: {figures_text(figures)}",
            "text/html": figures_html(f"job {jm.job!r}", figures, status)}


def _cell() -> object:
    """The notebook cell running now (its execution count)."""
    from IPython import get_ipython

    ip = get_ipython()
    return None if ip is None else ip.execution_count


class LiveDisplay:
    """A job's state in a notebook output, updated in place (an IPython display with a
    ``display_id``) until the job ends, when it shows the final state.

    :meth:`start` shows it and keeps it current from a daemon thread (``{job}:display``) that
    wakes every ``refresh_s`` seconds and at the job's end; :meth:`show_again` shows the same
    display in another cell (both views update).  :func:`watch` drives one from the waiting
    thread instead.  ``JobHandle.show()`` is the way to start one.
    """

    def __init__(self, handle: Watched, refresh_s: float = 0.5) -> None:
        self.handle = handle
        self.refresh_s = refresh_s
        self._shown = None                 # the IPython DisplayHandle
        self._cells: Set[object] = set()
        self._final = False
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None

    def display(self) -> None:
        """Show the display in the current cell."""
        from IPython.display import display

        self._shown = display(bundle(self.handle), raw=True, display_id=True)
        self._cells.add(_cell())

    def update(self) -> bool:
        """Show the state now; once the job has ended, its final state (later calls do
        nothing).  Whether the display is final."""
        with self._lock:
            if self._final or self._shown is None:
                return self._final
            done = self.handle.done
            self._shown.update(bundle(self.handle), raw=True)
            self._final = done
            return done

    def start(self) -> None:
        """Show the display here and keep it current from a daemon thread."""
        self.display()
        self.follow()

    def follow(self) -> None:
        """Keep the display current from a daemon thread until the job ends (once)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"{self.handle._job.metrics.job}:display")
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self.handle.join(self.refresh_s):
                self.update()
            self.update()
        except Exception:  # noqa: BLE001 - a display must never take anything down
            log.warning("the live display of job %r stopped", self.handle._job.metrics.job, exc_info=True)

    def show_again(self) -> None:
        """Show the display in the current cell too, unless it is there already."""
        from IPython.display import display

        cell = _cell()
        if self._shown is None or cell in self._cells:
            return
        self._cells.add(cell)
        display(bundle(self.handle), raw=True, display_id=self._shown.display_id)

    def close(self, timeout: Optional[float] = None) -> None:
        """Wait for the updating thread (it ends with the job, after the final update)."""
        if self._thread is not None:
            self._thread.join(timeout)


def _mode() -> str:
    if in_notebook():
        return "notebook"
    from rich.console import Console

    return "terminal" if Console().is_terminal else "log"


def watch(handle: Watched, refresh_s: float = 0.5, timeout: Optional[float] = None,
          mode: Optional[str] = None, *, clock: Callable[[], int] = time.monotonic_ns,
          sleep: Optional[Callable[[float], None]] = None) -> Reading:
    """Show ``handle``'s progress until the job ends (or ``timeout`` seconds); the last reading.

    ``mode`` is "terminal" (rich), "notebook" (a :class:`LiveDisplay`) or "log" (plain
    lines); by default it is detected.  ``clock`` (ns) paces the log lines and the timeout;
    between refreshes ``sleep(seconds)`` is called, by default a wait for the job's end (so
    the end is shown, and returned, at once); a test passes a clock that ``sleep`` moves.

    Interrupted in a notebook (the caller then stops the job), the display keeps following
    the job and ends in its final state.
    """
    mode = mode or _mode()
    if mode == "notebook":
        require("IPython.display", "notebook", "watch(mode='notebook')")
    deadline = None if timeout is None else clock() + int(timeout * 1e9)

    def waiting() -> bool:
        return not handle.done and (deadline is None or clock() < deadline)

    def pause(seconds: float) -> None:
        if deadline is not None:
            seconds = min(seconds, max((deadline - clock()) / 1e9, 0.0))
        if sleep is not None:
            sleep(seconds)
        else:
            handle.join(seconds)

    if mode == "notebook":
        live = LiveDisplay(handle, refresh_s)
        live.display()
        try:
            while waiting():
                pause(refresh_s)
                live.update()
        except BaseException:
            # The caller stops the job: follow it to its end, and let the stop wait for that.
            live.follow()
            handle._job.interrupt_hooks.append(live.close)
            raise
        if not live.update():
            live.follow()          # timed out while the job runs: the display keeps following it
        return read(handle)
    if mode == "terminal":
        from rich.live import Live

        with Live(read(handle).rich(), refresh_per_second=max(1.0, 1 / refresh_s)) as live:
            while waiting():
                pause(refresh_s)
                live.update(read(handle).rich())
            last = read(handle)
            live.update(last.rich())
        return last
    every_ns = int(LOG_EVERY_S * 1e9)
    next_line = clock() + every_ns
    while waiting():
        pause(min(refresh_s, LOG_EVERY_S))
        if clock() >= next_line:
            print(read(handle).text(), flush=True)
            next_line += every_ns
    last = read(handle)
    print(last.text(), flush=True)
    return last
