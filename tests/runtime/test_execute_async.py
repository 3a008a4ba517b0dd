"""``execute_async(progress=)``: the handle's live display (``JobHandle.show()``) is shown in a
Jupyter kernel by default, never elsewhere unless asked for."""
from __future__ import annotations

import pytest

import heliosdb as hdb
from heliosdb import environment
from heliosdb.runtime.job import JobHandle


@pytest.fixture
def shown(monkeypatch):
    calls = []
    monkeypatch.setattr(JobHandle, "show", lambda self, refresh_s=0.5: calls.append(self.name),
                        raising=False)
    return calls


def _run(progress, name):
    env = hdb.StreamEnvironment()
    env.generate(count=10).sink(hdb.sinks.memory())
    handle = env.execute_async(name=name, progress=progress)
    handle.wait(timeout=60)


@pytest.mark.parametrize("in_notebook, progress, expected", [
    (True, None, True), (True, False, False), (False, None, False), (False, True, True),
])
def test_the_display_is_automatic_in_a_notebook_and_forced_by_progress(
        monkeypatch, shown, in_notebook, progress, expected):
    monkeypatch.setattr(environment, "in_notebook", lambda: in_notebook)
    _run(progress, "shown")
    assert shown == (["shown"] if expected else [])


def test_progress_takes_a_bool_or_none():
    env = hdb.StreamEnvironment()
    env.generate(count=10).sink(hdb.sinks.memory())
    with pytest.raises(hdb.ConfigError, match="progress="):
        env.execute_async(progress="yes")


def test_outside_ipython_there_is_no_notebook():
    assert environment.in_notebook() is False
