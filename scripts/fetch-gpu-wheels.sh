#!/usr/bin/env bash
# Run HERE, on a machine that reaches a package index: download into .whl/ the cp312 manylinux
# wheels that the GPU host lacks (it has Python 3.12, numpy, psutil, JAX, PyTorch, nvidia-ml-py,
# h5py, ml-dtypes, rich, absl-py, click, jinja2, markupsafe, werkzeug, filelock, matplotlib,
# typing-extensions, packaging: see the host's package list). TensorFlow is not carried: the GPU
# profile runs Keras 3 on JAX and torch. Also the Debian packages of wrk and its LuaJIT into
# .whl/deb/. Then carry .whl/ with the working tree and run
# scripts/gpu-run.sh there. Override the interpreter with PYTHON=... (it needs pip).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
    flask==3.1.3 itsdangerous==2.2.0 blinker==1.9.0          # the web app (werkzeug, click, jinja2 are there)
    sqlalchemy==2.1.9                                          # 2.1 needs greenlet only for asyncio
    gunicorn==27.0.1 pyuwsgi==2.0.30.post1                     # the servers (pyuwsgi ships its own uwsgi)
    keras==3.15.1 namex==0.1.0 optree==0.20.0                  # Keras 3 and what the host lacks of its needs
)
PYTHON="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d "$tmp" "${WHEELS[@]}"
# Replace the folder's wheels only once every download succeeded: no mix of two versions.
mkdir -p .whl
rm -f .whl/*.whl
mv "$tmp"/*.whl .whl/
ls -1 .whl
du -cb .whl/*.whl | awk 'END { printf "%d wheels, %.1f MiB in .whl/\n", NR - 1, $1 / 1048576 }'

# wrk, so that GPU runs use the same load driver as CPU runs: Debian's packages (the GPU host runs
# Debian/Ubuntu with glibc; it unpacks them with dpkg -x, no install). Needs apt's package lists.
DEBS=(wrk libluajit-5.1-2 libluajit-5.1-common)
mkdir -p "$tmp/deb"
(cd "$tmp/deb" && apt-get download "${DEBS[@]}")
rm -rf .whl/deb
mv "$tmp/deb" .whl/deb
ls -1 .whl/deb
