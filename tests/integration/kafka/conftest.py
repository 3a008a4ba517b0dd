"""The session's Kafka broker (see broker.py)."""
import pytest

from .broker import broker_session


@pytest.fixture(scope="session")
def kafka():
    """A real Apache Kafka broker on 127.0.0.1, one for the whole session."""
    yield from broker_session()
