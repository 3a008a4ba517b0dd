"""Fixtures for the services integration tests talk to (see services.py)."""
import pytest

from .services import prometheus_service


@pytest.fixture(scope="session")
def prometheus():
    """A real Prometheus server on 127.0.0.1 (``make test`` starts it; else started here)."""
    yield from prometheus_service()
