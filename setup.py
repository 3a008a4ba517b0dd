"""Build HeliosDB: the Python package plus the Cython kernels from ``kernels/``.

Packages are discovered, never listed by hand: everything under ``heliosdb/``, and ``kernels/``,
which installs as the subpackage ``heliosdb.kernels`` (never as a top-level ``kernels``).  The
version lives in ``heliosdb/_version.py`` alone.  ``python -m build`` makes an sdist (the
``.pyx`` sources, compiled on the installing machine) and a wheel.

Extras are by purpose; ``[all]`` is every user-facing one, ``[test]`` what the suite needs.
"""
import re
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'^__version__ = "([^"]+)"', (HERE / "heliosdb" / "_version.py").read_text(), re.M).group(1)

extensions = [
    Extension("heliosdb.kernels._hashagg", ["kernels/_hashagg.pyx"], extra_compile_args=["-O3"]),
    Extension("heliosdb.kernels._accum", ["kernels/_accum.pyx"], extra_compile_args=["-O3"]),
    Extension("heliosdb.kernels._join", ["kernels/_join.pyx"], extra_compile_args=["-O3"]),
    Extension("heliosdb.kernels._lookup", ["kernels/_lookup.pyx"], extra_compile_args=["-O3"]),
]

packages = find_packages(include=["heliosdb", "heliosdb.*"])
packages += ["heliosdb.kernels"] + [f"heliosdb.kernels.{p}" for p in find_packages(where="kernels")]

# Optional parts, each named in the error a job gets when it needs one that is missing
# (heliosdb/_optional.py).
KAFKA = ["confluent-kafka>=2.3", "orjson>=3.9", "msgpack>=1.0", "fastavro>=1.9", "protobuf>=4.25"]
ROCKSDB = ["rocksdict>=0.3.23"]
S3 = ["s3fs>=2023.6"]
# Live progress and HTML displays in Jupyter (heliosdb/progress.py draws with IPython.display),
# charts (matplotlib), and what runs the notebooks of notebooks/ in a kernel (notebooks/run.py,
# tests/notebooks/: nbclient, nbformat; nbconvert renders them as HTML), and the kernel tests
# (tests/notebook_kernel/: ipykernel, jupyter_client).
NOTEBOOK = ["ipython>=8", "ipykernel>=6.25", "jupyter_client>=8", "matplotlib>=3.7", "nbclient>=0.10",
            "nbformat>=5.9", "nbconvert>=7.0", "pillow>=10"]
# Engine comparisons in benchmarks/ (DuckDB, Polars) and the Kafka benchmark.
BENCH = ["duckdb>=0.10", "polars>=0.20", "pandas>=2.0", "pytest-benchmark>=4.0", *KAFKA]
TEST = [
    "pytest>=7.4",
    "hypothesis>=6.90",
    "pytest-timeout>=2.2",
    "build>=1.0",                 # the wheel check builds the distribution (ci/wheel_check.sh)
    "import-linter>=2.17",        # the layering contracts (ci/lint.sh)
    "moto[server]>=5.0",          # the local S3-protocol server of the S3 tests
    "boto3>=1.28",
    *BENCH,
    *ROCKSDB,
    *S3,
    *NOTEBOOK,                    # the kernel tests and the notebooks run in CI, never skip
]

setup(
    name="heliosdb-streaming",
    version=VERSION,
    description="A columnar micro-batch stream processing engine with compiled kernels",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=packages,
    package_dir={"heliosdb.kernels": "kernels"},
    package_data={"heliosdb": ["py.typed"], "heliosdb.kernels": ["*.pyi", "*.pyx", "*.pxd"]},
    exclude_package_data={"heliosdb.kernels": ["*.c"]},
    ext_modules=cythonize(extensions, language_level=3, include_path=["kernels"]),
    install_requires=[
        "pyarrow>=14",
        "numpy>=1.24",
        "numba>=0.59",
        "fsspec>=2023.6",
        "prometheus-client>=0.19",
        "rich>=13",
    ],
    extras_require={
        "kafka": KAFKA,
        "rocksdb": ROCKSDB,
        "s3": S3,
        "notebook": NOTEBOOK,
        "bench": BENCH,
        "test": TEST,
        "all": sorted(set(KAFKA + ROCKSDB + S3 + NOTEBOOK)),
    },
    entry_points={"console_scripts": ["heliosdb=heliosdb.cli:main"]},
    zip_safe=False,
)
