"""Aggregates: one class per aggregate, each module of this package one aggregate.

A module here defines an :class:`~heliosdb.aggregates.base.AggSpec` subclass (it registers
itself by its ``kind``), the :class:`~heliosdb.aggregates.base.GroupsAccumulator` it keeps per
group (unless it shares another's), and a constructor function named like the kind, which
becomes ``hdb.<kind>``.  The package imports every module it finds (:func:`discover`), so a new
aggregate is one new file plus its tests (``docs/aggregates.md``).

Layering: the state backends (``heliosdb.state``) store accumulators; this package uses only
the kernels (``heliosdb.kernels``) below it.

Examples
--------
>>> import heliosdb.aggregates as aggregates
>>> sorted(aggregates.constructors())[:3]
['count', 'count_distinct', 'first']
>>> aggregates.constructors()["sum"]("v")
sum('v')
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
from typing import Callable, Dict, List

from .base import (AggSpec, GroupsAccumulator, Selection, aggregate_class, constructor_of, kinds,
                   unregister)
from .plan import AggregatePlan, Prepared

__all__ = ["AggSpec", "GroupsAccumulator", "Selection", "AggregatePlan", "Prepared", "aggregate_class",
           "kinds", "unregister", "discover", "constructors"]


def discover() -> List[str]:
    """Import every module of this package (every folder on its ``__path__``) not imported
    yet, so their aggregates register; returns the names of the modules imported."""
    found = []
    for info in pkgutil.iter_modules(__path__, __name__ + "."):
        if info.name not in sys.modules:
            importlib.import_module(info.name)
            found.append(info.name)
    return found


def constructors() -> Dict[str, Callable[..., AggSpec]]:
    """Every registered aggregate's user-facing function by name (``hdb.count``, ...)."""
    out = {}
    for kind in kinds():
        fn = constructor_of(aggregate_class(kind))
        if fn is not None:
            out[kind] = fn
    return out


discover()
