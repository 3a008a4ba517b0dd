"""Window specs and the watermark strategy: frozen, validated configs.

A spec says *which* windows an event belongs to and builds the logic that knows it (a
windower, ``heliosdb.operators.windower``); the window operators
(:mod:`heliosdb.operators.window`, :mod:`heliosdb.operators.session`) run it.  Windows align
to the epoch: ``start = t - (t mod size)``, also for times before 1970.

Every module of this package is imported with it, and every spec a module registers
(``@register``, :mod:`heliosdb.windows.spec`) is exported here and from ``heliosdb``: a new
window kind is one new module (see ``cumulate.py``).

>>> import heliosdb as hdb
>>> sorted(SPECS) == sorted(__all__) and hdb.TumblingWindow is TumblingWindow
True
"""
from __future__ import annotations

import importlib
import pkgutil

from .spec import SPECS, WindowSpec, register  # noqa: F401 - the package API
from .watermark import WatermarkStrategy, time_factor  # noqa: F401 - the package API

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

globals().update(SPECS)
#: The spec classes ``KeyedStream.window()`` takes.
WINDOW_SPECS = tuple(SPECS[name] for name in sorted(SPECS))

__all__ = sorted(SPECS)
