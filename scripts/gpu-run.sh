#!/usr/bin/env bash
# Run ON the GPU host (no network), from a copy of the working tree that carries .whl/
# (made here by scripts/fetch-gpu-wheels.sh). Runs the gpu profile and leaves its results in
# $OUT/gpu (RESULTS.md, records.jsonl, ...), plus host.txt: the GPU, driver and packages seen.
#
#   scripts/gpu-run.sh                      # the gpu profile
#   scripts/gpu-run.sh --only backend=jax   # any further `forkwise matrix` arguments
#
# How forkwise becomes importable there without a build: the carried wheels are unpacked into
# $SITE with pip --no-index --no-deps --target; the repository root (which IS the forkwise
# package) is linked in as $SITE/forkwise, and a small forkwise.dist-info is written from
# pyproject.toml so that its entry points (the strategies) and version are found. The code that
# runs is always this working tree's, never a stale build. Env: PYTHON (python3), OUT (./runs),
# SITE (/tmp/forkwise-site), FORKWISE_HOME (/tmp/forkwise-home), PROFILE (gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PYTHON="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/runs}"
SITE="${SITE:-/tmp/forkwise-site}"
PROFILE="${PROFILE:-gpu}"
NAME="$(basename "$PROFILE" .toml)"
export FORKWISE_HOME="${FORKWISE_HOME:-/tmp/forkwise-home}"

shopt -s nullglob
wheels=(.whl/*.whl)
if [ ${#wheels[@]} -eq 0 ]; then
    echo "error: no wheels in $ROOT/.whl: run scripts/fetch-gpu-wheels.sh where an index is reachable, and carry .whl" >&2
    exit 2
fi

rm -rf "$SITE"
mkdir -p "$SITE" "$OUT"
"$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --disable-pip-version-check \
    --target "$SITE" "${wheels[@]}"
ln -s "$ROOT" "$SITE/forkwise"
"$PYTHON" - "$ROOT" "$SITE" <<'PY'
import re, sys, tomllib
from pathlib import Path

root, site = Path(sys.argv[1]), Path(sys.argv[2])
project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
version = re.search(r'__version__ = "([^"]+)"', (root / "__init__.py").read_text()).group(1)
info = site / f"forkwise-{version}.dist-info"
info.mkdir()
(info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: forkwise\nVersion: {version}\n")
groups = {"console_scripts": project.get("scripts", {}), **project.get("entry-points", {})}
(info / "entry_points.txt").write_text(
    "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for g, eps in groups.items()))
(info / "top_level.txt").write_text("forkwise\n")
PY
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$SITE/bin:$PATH"

# wrk from the carried Debian packages (scripts/fetch-gpu-wheels.sh), unpacked, not installed:
# the matrix then loads GPU cells with the same driver as CPU runs (records say which ran).
debs=(.whl/deb/*.deb)
if [ ${#debs[@]} -gt 0 ]; then
    for deb in "${debs[@]}"; do dpkg -x "$deb" "$SITE/wrk-root"; done
    export PATH="$SITE/wrk-root/usr/bin:$PATH"
    export LD_LIBRARY_PATH="$SITE/wrk-root/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    # wrk has no --version that exits 0: its usage names it, and a missing library fails here.
    if ! wrk 2>&1 | grep -q "Usage: wrk"; then
        echo "error: the carried wrk does not run here:" >&2
        wrk 2>&1 | head -3 >&2
        exit 2
    fi
    echo "load driver: wrk from .whl/deb"
else
    echo "load driver: builtin (no .whl/deb/*.deb carried; scripts/fetch-gpu-wheels.sh fetches wrk)"
fi

# Preflight: every import the matrix needs, and what this host is; a failure stops here.
# Keras is imported with each installed backend in turn (its default, TensorFlow, is not here).
"$PYTHON" - <<'PY'
import importlib, importlib.metadata as md, subprocess, sys
for name in ("flask", "sqlalchemy", "gunicorn", "pyuwsgi", "numpy", "psutil", "matplotlib", "filelock"):
    importlib.import_module(name)
from forkwise.strategies import registry
assert "lazy" in registry.names(), registry.names()
from forkwise import gpu
print("forkwise", md.version("forkwise"), "from", importlib.import_module("forkwise").__file__)
installed = [b for b in gpu.BACKENDS if gpu.backend_installed(b)]
for backend in installed:
    env = {**__import__("os").environ, **gpu.clean_cpu_env(backend)}
    subprocess.run([sys.executable, "-c", "import keras; print('keras', keras.__version__, keras.backend.backend())"],
                   env=env, check=True)
print("backends installed:", installed, "| GPU:", gpu.probe())
PY

mkdir -p "$OUT/$NAME"
{
    echo "# host"; uname -a; "$PYTHON" --version
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || echo "nvidia-smi: not available"
    echo "# packages"
    "$PYTHON" -m pip list --disable-pip-version-check 2>/dev/null \
        | grep -iE '^(jax|jaxlib|jax-cuda|torch |keras|numpy|flask|werkzeug|sqlalchemy|gunicorn|pyuwsgi|nvidia-ml-py|optree|ml.dtypes|h5py) ' || true
} > "$OUT/$NAME/host.txt" 2>&1

"$PYTHON" -m forkwise matrix --profile "$PROFILE" --out "$OUT/$NAME" --plain "$@"
echo "results: $OUT/$NAME"
