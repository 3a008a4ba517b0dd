"""Serving metrics over HTTP: one server per (host, port) in a process, shared by the
environments that ask for it.

A :class:`MetricsServer` is a Prometheus registry with a
:class:`~heliosdb.metrics.MetricsCollector` of jobs, served by a WSGI app of prometheus-client
on a thread of its own.  Environments do not own servers: :func:`attach` hands out a
:class:`ServerUse` of the process's server for that host and port, starting it on first use and
closing it when the last use is released (``env.close()``, the environment garbage-collected, a
Ctrl-C that stopped its job).  So running a notebook cell with ``MetricsConfig(port=9464)``
twice attaches the second environment to the first one's server (a job run again under the
same name replaces its old series), and every ``port=0`` environment shares the process's one
any-port server instead of starting its own.
"""
from __future__ import annotations

import logging
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Dict, Optional, Tuple
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .metrics import JobMetrics, MetricsCollector

log = logging.getLogger("heliosdb.metrics")

#: How often the serving thread looks for a shutdown request: closing takes at most this long.
_POLL_S = 0.05


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's name
        """Scrapes are not logged (the base class prints each request to stderr)."""


class _Http(ThreadingMixIn, WSGIServer):
    daemon_threads = True           # a scrape in progress never keeps the process alive


def _family(host: str, port: int) -> int:
    """The address family to serve ``host`` on (IPv6 for an IPv6 address)."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    except socket.gaierror:
        return socket.AF_INET


class MetricsServer:
    """A metrics registry served over HTTP at ``url`` (one thread, ``heliosdb-metrics:PORT``).

    Environments share these through :func:`attach`; one made directly is its creator's alone.

    Examples
    --------
    >>> from urllib.request import urlopen
    >>> server = MetricsServer(port=0)           # any free port on 127.0.0.1
    >>> server.add(JobMetrics("doc-served"))
    >>> b'job="doc-served"' in urlopen(server.url).read()
    True
    >>> server.close()
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1"):
        from prometheus_client import CollectorRegistry, make_wsgi_app

        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = MetricsCollector(self.registry)
        http = type("_HttpServer", (_Http,), {"address_family": _family(host, port)})
        try:
            self._httpd: Optional[WSGIServer] = make_server(host, port, make_wsgi_app(self.registry),
                                                            http, handler_class=_Quiet)
        except OSError as exc:
            from .errors import ConfigError

            raise ConfigError(
                f"MetricsConfig(host={host!r}, port={port}): cannot serve metrics there ({exc}); "
                "pick another port, or port=0 for any free one"
            ) from exc
        self.host = host
        self.port: int = self._httpd.server_port
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(_POLL_S,),
                                        name=f"heliosdb-metrics:{self.port}", daemon=True)
        self._thread.start()
        log.info("serving metrics at %s", self.url, extra={"url": self.url})

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    @property
    def serving(self) -> bool:
        return self._httpd is not None

    def add(self, metrics: JobMetrics) -> None:
        """Export ``metrics`` (replacing an earlier run of a job with the same name)."""
        self.collector.add(metrics)

    def text(self) -> str:
        """The exposition text a scrape would get now."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def close(self) -> None:
        """Stop serving and free the port; the serving thread has ended when this returns
        (within about 50 ms).  Idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            self._thread.join()
            log.info("stopped serving metrics at %s", self.url, extra={"url": self.url})


class ServerUse:
    """One environment's use of a shared :class:`MetricsServer` (see :func:`attach`)."""

    def __init__(self, server: MetricsServer):
        self.server = server
        self._released = False

    @property
    def url(self) -> str:
        return self.server.url

    def add(self, metrics: JobMetrics) -> None:
        """Export a job's metrics (a job of the same name, from any environment, is replaced)."""
        self.server.add(metrics)

    def text(self) -> str:
        return self.server.text()

    def release(self) -> None:
        """This environment no longer uses the server; the last use closes it.  Idempotent."""
        with _LOCK:
            if self._released:
                return
            self._released = True
            entry = _USES.get(id(self.server))
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del _USES[id(self.server)]
            for table in (_BY_PORT, _ANY_PORT):
                for key, server in list(table.items()):
                    if server is self.server:
                        del table[key]
            self.server.close()     # under the lock: a new attach() never finds the port half-freed


_LOCK = threading.Lock()
#: Servers by (host, the port they serve): what an environment asking for that port attaches to.
_BY_PORT: Dict[Tuple[str, int], MetricsServer] = {}
#: The any-port server of each host (``MetricsConfig(port=0)``).
_ANY_PORT: Dict[str, MetricsServer] = {}
#: id(server) -> [server, uses].
_USES: Dict[int, list] = {}


def attach(port: int = 0, host: str = "127.0.0.1") -> ServerUse:
    """A use of the process's metrics server for ``host``:``port``, started if there is none
    (``port=0``: the host's one any-port server).  ``release()`` the use when done with it.

    Examples
    --------
    >>> a, b = attach(port=0), attach(port=0)
    >>> a.server is b.server                     # one server for both
    True
    >>> a.release(); b.release()                 # the last release closes it
    """
    with _LOCK:
        server = _ANY_PORT.get(host) if port == 0 else _BY_PORT.get((host, port))
        if server is None:
            server = MetricsServer(port, host)
            _BY_PORT[(host, server.port)] = server
            if port == 0:
                _ANY_PORT[host] = server
            _USES[id(server)] = [server, 0]
        _USES[id(server)][1] += 1
        return ServerUse(server)


def servers() -> Dict[str, int]:
    """The shared servers of this process: url -> the number of environments using it.

    >>> use = attach(port=0)
    >>> servers()[use.url] >= 1
    True
    >>> use.release()
    """
    with _LOCK:
        return {server.url: n for server, n in _USES.values()}
