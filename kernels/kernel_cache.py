"""The compiled-kernel cache: a generated kernel's source -> the loaded Numba kernel.

Each distinct source is imported once per process.  Its module is written to
``<cache dir>/kernels/fused_<digest>.py``, named by the digest of the source, so Numba's
on-disk cache (``cache=True`` in ``kernels._jit``) finds the machine code compiled by an
earlier process again instead of compiling it anew.

Examples
--------
>>> src = "from heliosdb.kernels._jit import jit\\n\\n\\n@jit\\ndef kernel(n):\\n    return n + 1\\n"
>>> load_kernel(src)(41)
42
>>> load_kernel(src) is load_kernel(src)
True
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
import threading
from types import ModuleType
from typing import Callable, Dict

from ._jit import cache_dir

_MODULES: Dict[str, ModuleType] = {}
_LOCK = threading.Lock()
_DIGESTS: Dict[str, str] = {}


def load_kernel(src: str) -> Callable:
    """The function ``kernel`` of the module whose source is ``src`` (imported once)."""
    digest = hashlib.sha256(src.encode()).hexdigest()[:20]
    with _LOCK:
        if digest in _MODULES:
            return _MODULES[digest].kernel  # type: ignore[attr-defined]
        folder = cache_dir() / "kernels"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"fused_{digest}.py"
        if not path.exists():
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                f.write(src)
            os.replace(tmp, path)
        name = f"heliosdb_fused_{digest}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        _MODULES[digest] = module
        return module.kernel  # type: ignore[attr-defined]


def source_digest(module: ModuleType) -> str:
    """A digest of ``module``'s source file.  A generated kernel that calls a helper module
    names the helper's digest in its source, so Numba's cache (which does not track called
    functions) never serves a kernel built against an older version of the helper.

    >>> from heliosdb.kernels import pyops
    >>> len(source_digest(pyops))
    16
    """
    name = module.__name__
    if name not in _DIGESTS:
        with open(module.__file__, "rb") as f:  # type: ignore[arg-type]
            _DIGESTS[name] = hashlib.sha256(f.read()).hexdigest()[:16]
    return _DIGESTS[name]
