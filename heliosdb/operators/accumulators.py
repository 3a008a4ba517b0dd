"""Moved: aggregates are :mod:`heliosdb.aggregates` (one class each), their group state
:mod:`heliosdb.state` (memory and RocksDB behind one interface).

This module only re-exports the names the window and keyed operators import, under their
former names, until those import from :mod:`heliosdb.state`; then it goes.
"""
from __future__ import annotations

from ..state import AccPlan, Prepared, adopt_column, fill_from_column, filter_rows, snapshot_rows
from ..state import state_from_arrow as partial_from_arrow
from ..state import state_to_arrow as partial_to_arrow
from ..state.memory import MemoryGroupState as Partial

__all__ = ["AccPlan", "Partial", "Prepared", "adopt_column", "fill_from_column", "filter_rows",
           "partial_from_arrow", "partial_to_arrow", "snapshot_rows"]
