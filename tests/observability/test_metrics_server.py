"""The metrics server's lifetime: one per (host, port) in a process, shared by the environments
that ask for it, closed when none uses it any more (close, garbage collection, a Ctrl-C)."""
from __future__ import annotations

import gc
import socket
import threading
from urllib.parse import urlparse
from urllib.request import urlopen

import pytest

import heliosdb as hdb
from heliosdb import metrics_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def _server_threads() -> list:
    return [t.name for t in threading.enumerate() if t.name.startswith("heliosdb-metrics:")]


def _cell(port: int, name: str = "cell", count: int = 100) -> hdb.StreamEnvironment:
    """What a notebook cell does: a new environment, a job, nothing closed."""
    env = hdb.StreamEnvironment(hdb.StreamingConfig(metrics=hdb.MetricsConfig(port=port)))
    env.generate(count=count).sink(hdb.sinks.memory())
    env.execute(name=name)
    return env


def test_a_cell_run_twice_on_a_fixed_port_attaches_to_the_same_server():
    port = _free_port()
    first = _cell(port, count=100)
    second = _cell(port, count=250)           # used to fail: "Address already in use"
    try:
        assert first.metrics_url == second.metrics_url == f"http://127.0.0.1:{port}/metrics"
        text = urlopen(second.metrics_url).read().decode()
        assert 'streaming_events_processed_total{job="cell",operator="generate-1"} 250.0' in text
        assert text.count('streaming_events_processed_total{job="cell",operator="generate-1"}') == 1
        assert _server_threads().count(f"heliosdb-metrics:{port}") == 1
    finally:
        first.close()
        assert _serving(port), "the second environment still uses the server"
        second.close()
    assert not _serving(port)
    assert f"heliosdb-metrics:{port}" not in _server_threads()


def test_port_zero_environments_reuse_one_server_and_cells_run_again_leave_no_threads():
    before = set(_server_threads())
    envs = [_cell(0, name=f"run-{i}") for i in range(5)]
    urls = {env.metrics_url for env in envs}
    assert len(urls) == 1
    assert len(set(_server_threads()) - before) <= 1
    port = urlparse(urls.pop()).port
    for env in envs:
        env.close()
        env.close()                            # idempotent
    assert not _serving(port)
    assert set(_server_threads()) <= before


def test_an_environment_garbage_collected_without_close_releases_its_server():
    port = _free_port()
    env = _cell(port)
    assert _serving(port)
    del env
    gc.collect()
    assert not _serving(port)
    again = _cell(port)                        # the port is free to serve again
    try:
        assert _serving(port)
    finally:
        again.close()


def test_a_closed_environment_serves_again_when_it_runs_another_job():
    env = _cell(0)
    env.close()
    env.execute(name="again")
    try:
        assert "again" in urlopen(env.metrics_url).read().decode()
    finally:
        env.close()


def test_the_server_closes_at_once_and_its_thread_with_it():
    use = metrics_server.attach(port=0)
    port, thread = use.server.port, f"heliosdb-metrics:{use.server.port}"
    assert thread in _server_threads()
    use.release()
    use.release()                              # idempotent
    assert thread not in _server_threads()
    assert not _serving(port)


def test_a_port_taken_by_another_process_is_still_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(hdb.ConfigError, match=f"port={port}"):
            metrics_server.attach(port=port)
    assert metrics_server.servers().get(f"http://127.0.0.1:{port}/metrics") is None
