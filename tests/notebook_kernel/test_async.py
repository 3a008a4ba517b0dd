"""In a real Jupyter kernel: ``await handle`` in a cell (the kernel's running event loop goes on
meanwhile), an interrupt of that cell stopping the job, and the live progress of
``execute(progress=True)`` and ``handle.wait(progress=True)`` arriving as a display updated in
place (display_data, then update_display_data with the same display id)."""
from __future__ import annotations

import pytest

from tests.notebook_kernel.test_interrupt import _after

pytestmark = pytest.mark.timeout(180)


def test_the_engine_knows_it_runs_in_a_notebook(kernel):
    cell = kernel.ok("from heliosdb.environment import in_notebook; print(json.dumps(in_notebook()))")
    assert cell.value() is True


def test_await_handle_in_a_cell_keeps_the_kernels_loop_running(kernel):
    cell = kernel.ok("""
    import asyncio
    ticks = []
    async def ticker():
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)
    beat = asyncio.ensure_future(ticker())
    env = hdb.StreamEnvironment()
    env.generate(rate=20_000, count=10_000).sink(hdb.sinks.memory())
    r = await env.execute_async(name="awaited", progress=False)
    beat.cancel()
    print(json.dumps({"events": r.metrics["streaming_events_processed_total"], "ticks": len(ticks)}))
    """)
    state = cell.value()
    assert state["events"] == 10_000
    assert state["ticks"] > 10, "the kernel's event loop was blocked while the cell awaited"


def test_interrupting_a_cell_that_awaits_the_job_stops_it(kernel, tmp_path):
    marker = tmp_path / "running"
    kernel.ok(f"""
    w = Watch("awaited-forever", marker={str(marker)!r})
    env = hdb.StreamEnvironment()
    env.generate(rate=20_000).sink(hdb.sinks.memory())
    h = env.execute_async(name="awaited-forever")
    """)
    cell = kernel.run("r = await h.wait_async()", interrupt_when=_after(marker, 0.3))
    # ipykernel turns SIGINT during a cell that awaits into a cancellation of it.
    assert cell.ename in ("CancelledError", "KeyboardInterrupt"), str(cell)
    state = kernel.ok("print(json.dumps({**w.report(), 'done': h.done}))").value()
    assert state["done"] and state["gone"] is not None and state["extra"] == [], state
    print(f"\nawait interrupted: threads gone {(state['gone'] - cell.interrupted) * 1000:.0f} ms after it")
    assert state["gone"] - cell.interrupted < 1.0


def _display_updates(cell) -> tuple:
    shown = cell.of_type("display_data")
    updates = cell.of_type("update_display_data")
    assert shown, f"no display: {cell}"
    ids = {m["content"]["transient"]["display_id"] for m in shown}
    assert len(ids) == 1, ids
    assert updates and {m["content"]["transient"]["display_id"] for m in updates} == ids
    assert all("text/html" in m["content"]["data"] for m in shown + updates)
    return shown, updates


def test_execute_with_progress_updates_one_display_in_place(kernel):
    cell = kernel.ok("""
    env = hdb.StreamEnvironment()
    env.generate(rate=20_000, count=30_000).sink(hdb.sinks.memory())      # 1.5 s
    r = env.execute(name="shown", progress=True)
    """)
    shown, updates = _display_updates(cell)
    assert "shown" in updates[-1]["content"]["data"]["text/html"]
    assert "done" in updates[-1]["content"]["data"]["text/html"]


def test_execute_async_then_wait_with_progress_in_a_later_cell(kernel):
    start = kernel.ok("""
    env = hdb.StreamEnvironment()
    env.generate(rate=20_000, count=30_000).sink(hdb.sinks.memory())
    h = env.execute_async(name="later", progress=False)
    """)
    assert not start.of_type("error")
    cell = kernel.ok("r = h.wait(timeout=60, progress=True)")
    _display_updates(cell)
