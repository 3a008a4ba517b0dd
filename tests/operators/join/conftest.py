"""Every join test runs twice: with the engine's compaction thresholds, and with state
compacted (rows renumbered, keys re-encoded, chains relinked, chunks merged) at every
chance, so the compaction paths face the same oracles as the rest."""
import pytest

from heliosdb.operators.join import session, symmetric
from heliosdb.state import rows


@pytest.fixture(autouse=True, params=["lazy", "eager"])
def compaction(request, monkeypatch):
    if request.param == "eager":
        monkeypatch.setattr(symmetric, "MIN_DEAD", 0)
        monkeypatch.setattr(session, "MIN_DEAD", 0)
        monkeypatch.setattr(rows, "MAX_CHUNKS", 1)
    return request.param
