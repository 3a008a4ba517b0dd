"""Build HeliosDB: the Python package plus the Cython kernels from ``kernels/``.

``kernels/`` installs as the subpackage ``heliosdb.kernels`` (never as a top-level ``kernels``).
"""
from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "heliosdb.kernels._hashagg",
        ["kernels/_hashagg.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "heliosdb.kernels._accum",
        ["kernels/_accum.pyx"],
        extra_compile_args=["-O3"],
    ),
]

# kafka_source / sinks.kafka and the record formats (heliosdb.formats).
KAFKA = ["confluent-kafka>=2.3", "orjson>=3.9", "msgpack>=1.0", "fastavro>=1.9", "protobuf>=4.25"]
# The S3 tests: s3:// through fsspec, against a local moto server (ci/services.sh).
S3 = ["s3fs>=2023.6", "moto[server]>=5.0", "boto3>=1.28"]

setup(
    name="heliosdb-streaming",
    version="0.1.0",
    description="A columnar micro-batch stream processing engine with compiled kernels",
    python_requires=">=3.10",
    packages=["heliosdb", "heliosdb.runtime", "heliosdb.operators", "heliosdb.connectors",
              "heliosdb.checkpoint", "heliosdb.formats", "heliosdb.kernels"],
    package_dir={"heliosdb": "heliosdb", "heliosdb.kernels": "kernels"},
    package_data={"heliosdb.kernels": ["*.pyi", "*.pyx"]},
    ext_modules=cythonize(extensions, language_level=3),
    install_requires=[
        "pyarrow>=14",
        "numpy>=1.24",
        "numba>=0.59",
        "zstandard>=0.22",
        "fsspec>=2023.6",
        "prometheus-client>=0.19",
        "rich>=13",
    ],
    extras_require={
        "test": [
            "pytest>=7.4",
            "hypothesis>=6.90",
            "pandas>=2.0",
            "duckdb>=0.10",
            "polars>=0.20",
            "pytest-benchmark>=4.0",
            "pytest-timeout>=2.2",
            "rocksdict>=0.3.23",
            *KAFKA,
            *S3,
        ],
        "rocksdb": ["rocksdict>=0.3.23"],
        "kafka": KAFKA,
        "bench": ["duckdb>=0.10", "polars>=0.20", "pytest-benchmark>=4.0", "pandas>=2.0", *KAFKA],
    },
    entry_points={"console_scripts": ["heliosdb=heliosdb.cli:main"]},
    zip_safe=False,
)
