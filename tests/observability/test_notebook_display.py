"""The live display of a job in a notebook, without a kernel: IPython's ``get_ipython`` and
``IPython.display.display`` are replaced by fakes that record what a frontend would receive
(each display and update, with its bundle and display id).  The real kernel is driven by the
notebook tests.

A job that must stay running while the test looks is held by a step (timeline.Hold) and
released at the end; nothing is timed, except that ``execute(progress=True)`` returns with
the job and not after a refresh period, which is the point of that test.
"""
from __future__ import annotations

import itertools
import sys
import threading
import time
import types
from typing import List, Optional

import pytest

import heliosdb as hdb
from heliosdb.testing import wait_until

from .timeline import Hold


class ZMQInteractiveShell:
    """Named as Jupyter's shell is: what ``heliosdb.display.in_notebook`` looks for."""

    execution_count = 1


class TerminalInteractiveShell:
    execution_count = 1


class Frontend:
    """What the notebook received: ("display" | "update", display id, bundle), in order."""

    def __init__(self) -> None:
        self.events: List[tuple] = []
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.interrupt_on_update: Optional[threading.Thread] = None

    def display(self, obj, raw=False, display_id=None):
        assert raw, "displays are raw mimebundles"
        did = f"d{next(self.ids)}" if display_id is True else display_id
        with self.lock:
            self.events.append(("display", did, obj))
        frontend = self

        class Handle:
            display_id = did

            def update(self, obj, raw=False):
                assert raw
                if frontend.interrupt_on_update is threading.current_thread():
                    frontend.interrupt_on_update = None
                    raise KeyboardInterrupt
                with frontend.lock:
                    frontend.events.append(("update", did, obj))

        return Handle() if display_id is not None else None

    def kinds(self) -> List[str]:
        with self.lock:
            return [e[0] for e in self.events]

    def last(self) -> dict:
        with self.lock:
            return self.events[-1][2]


@pytest.fixture
def notebook(monkeypatch):
    shell = ZMQInteractiveShell()
    frontend = Frontend()
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell
    display = types.ModuleType("IPython.display")
    display.display = frontend.display
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    return shell, frontend


def _held_job(name: str, hold: Hold) -> hdb.JobHandle:
    env = hdb.StreamEnvironment(hdb.StreamingConfig(batch_size=500))
    env.generate().map_batches(hold).sink(hdb.sinks.memory())
    return env.execute_async(name=name, progress=False)


def _display_threads(name: str) -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"{name}:display" and t.is_alive()]


def test_show_returns_at_once_and_updates_one_display_in_place_until_the_final_state(notebook):
    _, frontend = notebook
    hold = Hold(free=2)
    handle = _held_job("shown", hold)
    try:
        assert handle.show(refresh_s=0.02) is None
        assert frontend.kinds() == ["display"]
        assert wait_until(lambda: frontend.kinds().count("update") >= 2)
        running = frontend.last()
        assert running["text/plain"].startswith("job 'shown' running: elapsed ")
        assert "<table" in running["text/html"] and "running" in running["text/html"]
    finally:
        hold.release()
        handle.stop()
        handle.wait()
    handle._display.close(timeout=30)
    assert not _display_threads("shown")
    kinds, ids = frontend.kinds(), {e[1] for e in frontend.events}
    assert kinds[0] == "display" and set(kinds[1:]) == {"update"} and ids == {"d1"}
    final = frontend.last()
    assert final["text/plain"].startswith("job 'shown' stopped: ")
    for figure in ("events/s (recent)", "p99 (recent)", "watermark", "late", "backpressure",
                   "checkpoints", "state"):
        assert figure in final["text/plain"] and figure in final["text/html"]
    assert "IPython.core.display" not in final["text/plain"]


def test_show_twice_in_a_cell_is_one_display_and_in_another_cell_a_second_view(notebook):
    shell, frontend = notebook
    hold = Hold(free=1)
    handle = _held_job("twice", hold)
    try:
        handle.show()
        handle.show()                        # execute_async() showed it, then the user did
        assert frontend.kinds() == ["display"]
        shell.execution_count = 2
        handle.show()                        # a later cell: the same display there too
        displays = [e for e in frontend.events if e[0] == "display"]
        assert [d[1] for d in displays] == ["d1", "d1"]
        assert len(_display_threads("twice")) == 1
    finally:
        hold.release()
        handle.stop()
        handle.wait()
        handle._display.close(timeout=30)


def test_a_handle_as_a_cells_result_shows_the_live_display(notebook):
    _, frontend = notebook
    env = hdb.StreamEnvironment()
    env.generate(count=1_000).sink(hdb.sinks.memory())
    handle = env.execute_async(name="result-cell", progress=False)
    handle._ipython_display_()
    handle.wait()
    handle._display.close(timeout=30)
    assert frontend.kinds()[0] == "display"
    assert frontend.last()["text/plain"].startswith("job 'result-cell' done: ")


def test_execute_async_in_a_notebook_shows_one_live_display_also_as_the_cells_result(notebook):
    _, frontend = notebook
    env = hdb.StreamEnvironment()
    env.generate(count=1_000).sink(hdb.sinks.memory())
    handle = env.execute_async(name="auto")          # shown at once, in this cell ...
    handle._ipython_display_()                       # ... and not again as its result
    handle.wait()
    handle._display.close(timeout=30)
    assert frontend.kinds().count("display") == 1
    assert frontend.last()["text/plain"].startswith("job 'auto' done: ")


def test_outside_a_notebook_a_handle_displays_its_state_once(monkeypatch):
    shown = []
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: TerminalInteractiveShell()
    display = types.ModuleType("IPython.display")
    display.display = lambda obj, raw=False, display_id=None: shown.append((obj, raw, display_id))
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "IPython.display", display)
    env = hdb.StreamEnvironment()
    env.generate(count=100).sink(hdb.sinks.memory())
    handle = env.execute_async(name="terminal")
    handle.wait()
    handle._ipython_display_()
    ((bundle, raw, display_id),) = shown
    assert raw and display_id is None and bundle["text/plain"].startswith("job 'terminal' done")
    assert handle._display is None and not _display_threads("terminal")


def test_execute_with_progress_in_a_notebook_returns_with_the_job_not_after_a_refresh(notebook):
    from heliosdb.progress import watch

    _, frontend = notebook
    env = hdb.StreamEnvironment()
    env.generate(count=20_000).sink(hdb.sinks.memory())
    handle = env.execute_async(name="prompt", progress=False)
    t0 = time.monotonic()
    last = watch(handle, refresh_s=60.0)           # a fixed sleep would take a minute
    assert time.monotonic() - t0 < 30.0
    assert not last.running and last.events == 20_000
    assert frontend.kinds() == ["display", "update"]
    assert frontend.last()["text/plain"].startswith("job 'prompt' done: ")
    assert not _display_threads("prompt")          # the waiting thread drew it: no other
    handle.wait()


def test_execute_with_progress_in_a_notebook_shows_the_final_state(notebook):
    _, frontend = notebook
    env = hdb.StreamEnvironment()
    env.generate(count=5_000).sink(hdb.sinks.memory())
    result = env.execute(name="progress-nb", progress=True)
    assert result.metrics["streaming_events_processed_total"] == 5_000
    assert frontend.last()["text/plain"].startswith("job 'progress-nb' done: ")


def test_an_interrupt_ends_the_display_in_the_final_state_not_running(notebook):
    _, frontend = notebook
    env = hdb.StreamEnvironment()
    env.generate(rate=5_000).sink(hdb.sinks.memory())
    handle = env.execute_async(name="interrupted", progress=False)
    frontend.interrupt_on_update = threading.current_thread()     # Ctrl-C at the first refresh
    with pytest.raises(KeyboardInterrupt):
        handle.wait(progress=True)
    assert handle.done and handle.status == "stopped"
    assert frontend.last()["text/plain"].startswith("job 'interrupted' stopped: ")
    assert not _display_threads("interrupted")


def test_status_names_each_state():
    env = hdb.StreamEnvironment()
    env.generate(count=100).sink(hdb.sinks.memory())
    done = env.execute_async(name="st-done")
    done.wait()
    assert done.status == "done" and repr(done) == "<JobHandle 'st-done' done>"

    def boom(batch):
        if batch.num_rows:                   # not the empty batch that types the plan
            raise ValueError("bad row")
        return batch

    env = hdb.StreamEnvironment()
    env.generate(count=100).map_batches(boom).sink(hdb.sinks.memory())
    failed = env.execute_async(name="st-failed")
    with pytest.raises(hdb.errors.HeliosError):
        failed.wait()
    assert failed.status.startswith("failed: ") and "bad row" in failed.status
