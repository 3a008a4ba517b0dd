"""A real Jupyter kernel for the tests, driven as a notebook front end drives it.

:class:`Kernel` starts ``ipykernel`` on this interpreter (``python -m ipykernel_launcher``, from
a kernel spec of its own, so no kernel installed on the machine is picked up instead) through
jupyter_client's ``KernelManager``, runs cells, collects what each sends on iopub (streams,
displays, the error), and can interrupt a cell as the notebook's stop button does
(``KernelManager.interrupt_kernel()``: SIGINT to the kernel).

ipykernel and jupyter_client are in the ``[notebook]`` extra, which ``[test]`` includes: a
missing one fails the import of this module, loudly, never a skip.
"""
from __future__ import annotations

import json
import queue
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional

import ipykernel  # noqa: F401 - the kernel itself: fail here if it is missing
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

ROOT = Path(__file__).resolve().parents[2]
GENEROUS_S = 60.0


@dataclass
class Cell:
    """What running one cell gave: its iopub messages and reply."""

    code: str
    messages: List[dict] = field(default_factory=list)
    status: str = ""                       # the execute_reply's: ok / error / aborted
    ename: str = ""                        # the error's name, if it raised
    evalue: str = ""
    started: float = 0.0                   # time.monotonic() when sent
    interrupted: Optional[float] = None    # time.monotonic() when interrupted
    ended: float = 0.0                     # time.monotonic() when the reply came

    @property
    def stdout(self) -> str:
        return "".join(m["content"]["text"] for m in self.messages
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")

    @property
    def stderr(self) -> str:
        return "".join(m["content"]["text"] for m in self.messages
                       if m["msg_type"] == "stream" and m["content"]["name"] == "stderr")

    def of_type(self, *types: str) -> List[dict]:
        return [m for m in self.messages if m["msg_type"] in types]

    def value(self) -> object:
        """The JSON the cell printed last (cells end with ``print(json.dumps(...))``)."""
        lines = [ln for ln in self.stdout.splitlines() if ln.strip()]
        assert lines, f"the cell printed nothing: {self}"
        return json.loads(lines[-1])

    def __str__(self) -> str:
        return (f"cell {self.code[:60]!r}: status={self.status} {self.ename} {self.evalue[:300]}\n"
                f"stdout: {self.stdout[-2000:]}\nstderr: {self.stderr[-2000:]}")


class Kernel:
    """An IPython kernel in a process of its own, on this Python."""

    def __init__(self, workdir: Path):
        specs = workdir / "kernels"
        spec = specs / "heliosdb-test"
        spec.mkdir(parents=True, exist_ok=True)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "heliosdb tests", "language": "python", "interrupt_mode": "signal"}))
        ksm = KernelSpecManager(kernel_dirs=[str(specs)], ensure_native_kernel=False)
        self.km = KernelManager(kernel_name="heliosdb-test", kernel_spec_manager=ksm)
        self.log = open(workdir / "kernel.log", "w")
        self.km.start_kernel(cwd=str(ROOT), stdout=self.log, stderr=self.log)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=GENEROUS_S)

    def run(self, code: str, interrupt_when: Optional[Callable[[], bool]] = None,
            timeout: float = GENEROUS_S) -> Cell:
        """Run ``code`` as a cell; interrupt the kernel once ``interrupt_when()`` is true (and
        the cell has begun: an idle kernel ignores an interrupt)."""
        cell = Cell(textwrap.dedent(code), started=time.monotonic())
        msg_id = self.kc.execute(cell.code)
        deadline = cell.started + timeout
        idle = running = False
        while not idle:
            if (interrupt_when is not None and running and cell.interrupted is None
                    and interrupt_when()):
                self.km.interrupt_kernel()
                cell.interrupted = time.monotonic()
            if time.monotonic() > deadline:
                self.km.interrupt_kernel()
                raise TimeoutError(f"no end of the cell in {timeout}s: {cell}")
            try:
                msg = self.kc.get_iopub_msg(timeout=0.01)
            except queue.Empty:
                continue
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "status":
                idle = msg["content"]["execution_state"] == "idle"
                continue
            running = running or msg["msg_type"] == "execute_input"
            cell.messages.append(msg)
        reply = self.kc.get_shell_msg(timeout=GENEROUS_S)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = self.kc.get_shell_msg(timeout=GENEROUS_S)
        cell.ended = time.monotonic()
        cell.status = reply["content"]["status"]
        cell.ename = reply["content"].get("ename", "")
        cell.evalue = reply["content"].get("evalue", "")
        return cell

    def ok(self, code: str, **kw) -> Cell:
        """Run a cell that must not fail."""
        cell = self.run(code, **kw)
        assert cell.status == "ok", str(cell)
        return cell

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)
        self.log.close()


#: The first cell of every test kernel: the engine, and a probe of the kernel's threads.
SETUP = '''
import json, os, socket, threading, time
import heliosdb as hdb

def thread_names():
    return sorted(t.name for t in threading.enumerate())

class Watch:
    """From another thread: when the threads of job `job` first ran, and when (time.monotonic,
    comparable across processes) they and every thread started with them were gone."""

    def __init__(self, job, marker=None):
        self.job, self.marker = job, marker
        self.baseline = set(threading.enumerate())
        self.seen = self.gone = None
        self._t = threading.Thread(target=self._run, daemon=True, name="test-watch")
        self.baseline.add(self._t)
        self._t.start()

    def _mine(self):
        return [t for t in threading.enumerate() if t.name.startswith(self.job + ":")]

    def _run(self):
        while self.seen is None:
            if self._mine():
                self.seen = time.monotonic()
                if self.marker:
                    open(self.marker, "w").close()
            time.sleep(0.002)
        while self.gone is None:
            if not self._mine() and set(threading.enumerate()) <= self.baseline:
                self.gone = time.monotonic()
            time.sleep(0.002)

    def report(self, timeout=10.0):
        self._t.join(timeout)
        return {"seen": self.seen, "gone": self.gone,
                "extra": sorted(t.name for t in set(threading.enumerate()) - self.baseline)}

def port_free(url):
    from urllib.parse import urlparse
    try:
        socket.create_connection(("127.0.0.1", urlparse(url).port), timeout=2).close()
        return False
    except OSError:
        return True
'''
