#!/usr/bin/env bash
# Install the project as users do.  Builds the sdist and, from it, the wheel (so the sdist must
# compile the Cython kernels from source), installs the wheel into a fresh virtualenv and, from a
# directory outside the checkout, runs a windowed job and every docstring example against the
# installed package, then the import-linter contracts (ci/lint.sh).  A module left out of the
# wheel, an example that only works from the source tree, or an import against the layering
# fails here.  The rest of the suite uses the editable install.
#
#   ci/wheel_check.sh [PYTHON]      (default: the python3 on PATH; .venv provides `build`)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
python=${1:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "wheel check: building the sdist and the wheel"
"$root/.venv/bin/python" -m build --outdir "$work/dist" "$root" > "$work/build.log" 2>&1 \
  || { tail -n 40 "$work/build.log"; exit 1; }
ls "$work/dist"
wheel=$(ls "$work"/dist/*.whl)
python3 -c "import sys, zipfile; names = zipfile.ZipFile(sys.argv[1]).namelist(); \
assert any(n.startswith('heliosdb/kernels/_hashagg') and n.endswith('.so') for n in names), 'wheel lacks the compiled kernels'" "$wheel"

echo "wheel check: installing $(basename "$wheel")[all] into a fresh virtualenv"
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --upgrade pip
# pandas, polars, duckdb: the examples of from_pandas / to_polars and of heliosdb.testing (whose
# readers compare pyarrow, pandas and DuckDB); pytest runs the docstring examples.
"$work/venv/bin/python" -m pip install --quiet "${wheel}[all]" pandas polars duckdb pytest

mkdir "$work/elsewhere"
cp "$root/tests/test_doctests.py" "$work/elsewhere/"
cd "$work/elsewhere"
"$work/venv/bin/heliosdb" --version
"$work/venv/bin/python" - <<'PY'
from datetime import timedelta
import heliosdb as hdb

assert "site-packages" in hdb.__file__, f"imported from {hdb.__file__}, not the installed wheel"
env = hdb.StreamEnvironment()
rows = [{"ts": 1_000 * i // 3, "user": f"u{i % 4}", "value": float(i)} for i in range(3_000)]
out = (env.from_iterable(rows)
       .with_watermark(time="ts", max_out_of_orderness=timedelta(seconds=1))
       .key_by("user")
       .window(hdb.TumblingWindow.of(timedelta(seconds=10)))
       .aggregate(n=hdb.count(), total=hdb.sum("value"))
       .collect())
assert out.num_rows == 400 and sum(out["n"].to_pylist()) == 3_000, out
print(f"wheel check: heliosdb {hdb.__version__} from {hdb.__file__}: windowed job gave {out.num_rows} rows")
PY
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider test_doctests.py
echo "wheel check: layering contracts (import-linter) on the installed package"
"$root/ci/lint.sh" "$work/venv/bin/python"
