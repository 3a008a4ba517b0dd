"""How a running job stops: on request, on Ctrl-C, on SIGTERM.

Stopping is one path, whoever asks for it (``JobHandle.stop()``, a KeyboardInterrupt while a
thread waits for the job, SIGTERM while the main thread waits for it):

1. the source stops reading and emits the rows it holds;
2. a checkpointed job takes a final checkpoint right after that last batch: a barrier like any
   other, committed like any other (Flink's stop-with-savepoint), so running the job again
   (same name, same storage) resumes exactly there, nothing lost, nothing read twice;
3. the stages run what is in flight through to the sinks and end; the coordinator waits for the
   final epoch to commit, then frees the job's lease;
4. every thread of the job is joined.

A second interrupt while that runs *aborts*: the channels close, in-flight batches are dropped
(an exactly-once sink deletes their unpublished files), no final checkpoint is taken, and a
restart resumes from the last committed checkpoint, consistently.  A third interrupt stops
waiting for threads stuck in user code (they are daemon threads) and re-raises at once.  If
any of the interrupts was a SIGTERM, the process ends as SIGTERM ends it.

Waiting is done in short slices, so a signal reaches the waiting main thread at once whatever it
is waiting on (``_thread.interrupt_main()`` included).  After the stop, the KeyboardInterrupt is
re-raised.  An asyncio task awaiting the job (:func:`wait_async`, ``await handle``) polls it
without blocking its loop; cancelling that task (what Jupyter's interrupt does to a cell that
awaits) stops the job the same way, then the CancelledError goes on.  SIGTERM gets a handler only while the main thread waits for a job (the previous one
is put back after); it triggers the same stop, then the process ends as SIGTERM would have
ended it: with the default disposition the signal is raised again and the process dies of it
(exit status 143 in a shell), and a Python handler that was installed before is called.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Protocol

log = logging.getLogger("heliosdb.runtime")


class StoppableJob(Protocol):
    """What stopping needs of a job (a :class:`heliosdb.runtime.job.Job`)."""

    name: str
    coordinator: Any
    interrupt_hooks: List[Callable[[], None]]

    @property
    def error(self) -> Optional[BaseException]: ...

    @property
    def done(self) -> bool: ...

    def stop(self, drain: bool = False) -> None: ...

    def abort(self) -> None: ...

    def join(self, timeout: Optional[float] = None) -> bool: ...

    def result(self) -> Any: ...

    def threads(self) -> List[threading.Thread]: ...

    def committed_epoch(self) -> Optional[int]: ...

class Terminated(BaseException):
    """SIGTERM arrived while the main thread waited for a job (raised by the handler that
    :func:`sigterm_stops_job` installs; never seen outside the wait)."""

    def __init__(self, previous: Any):
        super().__init__("SIGTERM")
        self.previous = previous


@contextlib.contextmanager
def sigterm_stops_job() -> Iterator[None]:
    """While the main thread is inside, SIGTERM raises :class:`Terminated` there; the previous
    handler is put back on the way out.  Elsewhere (another thread, SIGTERM ignored) it does
    nothing.

    >>> import signal
    >>> before = signal.getsignal(signal.SIGTERM)
    >>> with sigterm_stops_job():
    ...     signal.getsignal(signal.SIGTERM) is before
    False
    >>> signal.getsignal(signal.SIGTERM) is before
    True
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_IGN:
        yield                               # the process chose to ignore SIGTERM: leave it so
        return

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(previous)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:                      # not the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def deliver_sigterm(previous: Any) -> None:
    """After the job stopped: end the process as the SIGTERM would have without us (raise it
    again with the default disposition), or pass it to the Python handler there was before.

    >>> deliver_sigterm(lambda signum, frame: print("the previous handler got", signum))
    the previous handler got 15
    """
    if callable(previous):
        previous(signal.SIGTERM, None)
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream: nothing left to flush
            pass
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.raise_signal(signal.SIGTERM)
    sys.exit(128 + signal.SIGTERM)          # only if the signal is blocked in this thread


def wait(job: StoppableJob, timeout: Optional[float] = None,
         watch: Optional[Callable[[], Any]] = None) -> Any:
    """Block until ``job`` ends (``watch``, e.g. a progress display, runs first) and return its
    result; on Ctrl-C or SIGTERM stop it as the module docstring says, then re-raise (or end
    the process, for SIGTERM).  A ``timeout`` that passes raises TimeoutError and leaves the
    job running; it bounds the whole wait, ``watch`` included (give it the same timeout).
    ``Job.wait()`` and ``JobHandle.wait()`` come here.

    >>> import heliosdb as hdb
    >>> env = hdb.StreamEnvironment()
    >>> _ = env.generate(count=100).sink(hdb.sinks.memory())
    >>> handle = env.execute_async(name="doc-stopping")
    >>> wait(handle._job).metrics["streaming_events_processed_total"]
    100
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    interrupt: Optional[BaseException] = None
    with sigterm_stops_job():
        try:
            if watch is not None:
                watch()
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job.join(left):
                raise TimeoutError(f"job {job.name!r} still running after {timeout}s")
        except (KeyboardInterrupt, Terminated) as exc:
            interrupt = exc
        if interrupt is not None:
            interrupt = _stop_after(job, interrupt)
    if interrupt is None:
        return job.result()
    if isinstance(interrupt, Terminated):
        deliver_sigterm(interrupt.previous)
        return job.result()                 # the previous handler let the process go on
    raise interrupt


#: An awaiting task looks at the job this often.
POLL_S = 0.02


async def wait_async(job: StoppableJob, timeout: Optional[float] = None) -> Any:
    """Await the end of ``job`` without blocking the event loop and return its result (or
    raise its error).  A ``timeout`` that passes raises TimeoutError and leaves the job
    running.  Cancelling the awaiting task (a notebook's interrupt of a cell that awaits) or a
    KeyboardInterrupt inside it stops the job as Ctrl-C stops ``wait()`` (the loop is held for
    that stop, as long as a blocking wait would be), then the cancellation goes on.
    ``JobHandle.wait_async()`` and ``await handle`` come here.

    >>> import asyncio
    >>> import heliosdb as hdb
    >>> env = hdb.StreamEnvironment()
    >>> _ = env.generate(count=100).sink(hdb.sinks.memory())
    >>> async def main():
    ...     handle = env.execute_async(name="doc-wait-async")
    ...     return await wait_async(handle._job)
    >>> asyncio.run(main()).metrics["streaming_events_processed_total"]
    100
    """
    import asyncio

    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while not job.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(f"job {job.name!r} still running after {timeout}s")
            await asyncio.sleep(POLL_S if left is None else min(POLL_S, left))
    except (asyncio.CancelledError, KeyboardInterrupt) as exc:
        _stop_after(job, exc)
        raise
    job.join()                              # done: only the joiner's last lines remain
    return job.result()


def _stop_after(job: StoppableJob, first: BaseException) -> BaseException:
    """Stop ``job`` (the first interrupt), abort it (a second), stop joining (a third), then
    run its interrupt hooks; its threads are joined before this returns, unless a third
    interrupt came.  Returns the interrupt to pass on: a SIGTERM if one came, else ``first``."""
    seen = [first]
    step = 0                                # 0: stop, 1: abort, 2: give up joining
    while True:
        try:
            if step == 0:
                job.stop()
                what = ("SIGTERM" if isinstance(first, Terminated) else "KeyboardInterrupt"
                        if isinstance(first, KeyboardInterrupt) else "cancelled")
                final = " with a final checkpoint" if job.coordinator is not None else ""
                log.warning("job %r: %s: stopping%s; interrupt again to abort without it", job.name,
                            what, final, extra={"job": job.name})
            elif step == 1:
                job.abort()
                log.warning("job %r: aborting: in-flight batches are dropped; a restart resumes from "
                            "checkpoint %s", job.name, job.committed_epoch(), extra={"job": job.name})
            else:
                job.abort()
                alive = [t.name for t in job.threads() if t.is_alive()]
                log.warning("job %r: not waiting any more for threads %s", job.name, alive,
                            extra={"job": job.name})
                break
            job.join()
            break
        except (KeyboardInterrupt, Terminated) as exc:
            seen.append(exc)
            step += 1
    # Hooks (closing the metrics server takes up to 0.5 s) run on a thread of their own, so a
    # further Ctrl-C cannot cut them short and leave a port open.
    hooks = threading.Thread(target=_release, args=(job, step < 2), daemon=True, name=f"{job.name}:release")
    hooks.start()
    while hooks.is_alive():
        try:
            hooks.join(0.05)
        except (KeyboardInterrupt, Terminated) as exc:
            seen.append(exc)
    return next((e for e in seen if isinstance(e, Terminated)), first)


def _release(job: StoppableJob, joined: bool) -> None:
    """After the stop: say where the job stopped, run its interrupt hooks."""
    if joined:
        epoch = job.committed_epoch()
        if job.error is not None:
            log.error("job %r: stopped, but %s: %s; a restart resumes from checkpoint %s", job.name,
                      type(job.error).__name__, job.error, epoch, extra={"job": job.name})
        elif epoch is not None:
            log.warning("job %r: stopped at checkpoint %d; run it again to resume there", job.name,
                        epoch, extra={"job": job.name, "epoch": epoch})
    for hook in job.interrupt_hooks:
        try:
            hook()
        except Exception:  # noqa: BLE001 - releasing after a stop; the interrupt matters
            log.warning("job %r: releasing %r after the stop failed", job.name, hook, exc_info=True)
