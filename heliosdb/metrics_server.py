"""Serving an environment's metrics over HTTP: a Prometheus registry of its own (so several
environments in one process never collide) with a :class:`~heliosdb.metrics.MetricsCollector`
of its jobs, served by prometheus-client."""
from __future__ import annotations

import logging

from .metrics import JobMetrics, MetricsCollector

log = logging.getLogger("heliosdb.metrics")


class MetricsServer:
    """One environment's metrics registry, served over HTTP at ``url`` by prometheus-client.

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
        from prometheus_client import CollectorRegistry, start_http_server

        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = MetricsCollector(self.registry)
        try:
            self._httpd, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            from .errors import ConfigError

            raise ConfigError(
                f"MetricsConfig(host={host!r}, port={port}): cannot serve metrics there ({exc}); "
                "pick another port, or port=0 for any free one"
            ) from exc
        self.host = host
        self.port = self._httpd.server_port
        log.info("serving metrics at %s", self.url, extra={"url": self.url})

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def add(self, metrics: JobMetrics) -> None:
        self.collector.add(metrics)

    def text(self) -> str:
        """The exposition text a scrape would get now."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()

    def close(self) -> None:
        """Stop serving (idempotent)."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
