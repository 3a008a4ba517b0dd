#!/usr/bin/env bash
# The layering contracts of pyproject.toml ([tool.importlinter]), checked with import-linter on the
# package as installed: kernels/ is the subpackage heliosdb.kernels only in an installed wheel.
#
#   ci/lint.sh                 build the wheel, install it into a scratch folder, check it
#   ci/lint.sh VENV_PYTHON     check the heliosdb installed in that interpreter (wheel_check.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [ $# -ge 1 ]; then
    python=$1
else
    python="$root/.venv/bin/python"
    echo "lint: building the wheel"
    rm -rf "$root/build"            # setuptools would ship modules deleted since the last build
    "$python" -m pip wheel --quiet --no-deps --no-build-isolation -w "$work/dist" "$root" >"$work/build.log" 2>&1 \
      || { tail -n 40 "$work/build.log"; exit 1; }
    "$python" -m pip install --quiet --no-deps --target "$work/site" "$work"/dist/*.whl
    export PYTHONPATH="$work/site"
fi
"$python" -m pip show import-linter >/dev/null 2>&1 || "$python" -m pip install --quiet "import-linter>=2.17"
cd "$work"                          # never the checkout: heliosdb must come from the install
"$python" - <<'PY'
import heliosdb, heliosdb.kernels, os
assert os.path.dirname(heliosdb.kernels.__file__) == os.path.join(os.path.dirname(heliosdb.__file__), "kernels"), \
    f"heliosdb.kernels at {heliosdb.kernels.__file__}: not an installed package"
PY
"$(dirname "$python")/lint-imports" --no-cache "$root/pyproject.toml"
