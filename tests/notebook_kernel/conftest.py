"""One real IPython kernel for the kernel tests (starting one takes a couple of seconds)."""
from __future__ import annotations

import pytest

from tests.notebook_kernel.kernel import SETUP, Kernel


@pytest.fixture(scope="session")
def kernel(tmp_path_factory):
    k = Kernel(tmp_path_factory.mktemp("kernel"))
    try:
        k.ok(SETUP, timeout=120)          # the engine's import (and a cold numba cache)
        yield k
    finally:
        k.close()
