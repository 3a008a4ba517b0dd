"""Every docstring example in the package runs, as written, and prints what it shows."""
import doctest
import importlib
import pkgutil

import pytest

import heliosdb


def _modules():
    names = ["heliosdb"]
    for info in pkgutil.walk_packages(heliosdb.__path__, "heliosdb."):
        names.append(info.name)
    import heliosdb.kernels as k

    for info in pkgutil.iter_modules(k.__path__, "heliosdb.kernels."):
        if info.name not in names:
            names.append(info.name)
    return sorted(set(n for n in names if not n.endswith(".cli")))


@pytest.mark.parametrize("module", _modules())
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest example(s) failed in {module}"
