"""The kernels are the lowest layer: nothing under ``kernels/`` imports the engine above it.

Module-level and function-level imports both count.  Settings reach the kernels from the
environment (``kernels._jit``, read as ``heliosdb.config`` reads it) or from the caller.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import heliosdb.kernels as kernels
from heliosdb import config
from heliosdb.kernels import _jit

#: What a kernel module may import from the package: itself and the floor anyone may import.
ALLOWED = ("heliosdb.kernels", "heliosdb.errors", "heliosdb.log", "heliosdb._optional",
           "heliosdb._version")


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.module
            else:       # kernels/x.py is heliosdb.kernels.x: one dot is heliosdb.kernels
                base = ["heliosdb", "kernels"][: 3 - node.level]
                yield ".".join(base + ([node.module] if node.module else []))


@pytest.mark.parametrize("path", sorted(Path(kernels.__file__).parent.glob("*.py")),
                         ids=lambda p: p.name)
def test_kernel_modules_import_nothing_above_the_kernels(path):
    above = [m for m in _imports(path)
             if m.split(".")[0] == "heliosdb" and not m.startswith(ALLOWED)]
    assert not above, f"{path.name} imports {above}; pass the value in instead"


@pytest.mark.parametrize("env", [
    {}, {"HELIOSDB_CACHE_DIR": "/tmp/h"}, {"XDG_CACHE_HOME": "/tmp/x"},
    {"HELIOSDB_NUMBA_CACHE": "0"}, {"HELIOSDB_NUMBA_CACHE": "off"},
    {"HELIOSDB_NUMBA_CACHE": "1", "HELIOSDB_CACHE_DIR": ""},
])
def test_jit_reads_the_settings_config_documents(monkeypatch, env):
    assert (_jit.ENV_CACHE_DIR, _jit.ENV_NUMBA_CACHE) == (config.ENV_CACHE_DIR, config.ENV_NUMBA_CACHE)
    for name in ("HELIOSDB_CACHE_DIR", "XDG_CACHE_HOME", "HELIOSDB_NUMBA_CACHE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _jit.cache_dir() == config.cache_dir()
    assert _jit.cache_enabled() == config.numba_cache_enabled()
