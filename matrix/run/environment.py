"""Environment metadata for every record: where and with what it was measured.

Runs in the cell process and the matrix runner; the GPU is read through NVML or nvidia-smi.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import psutil

from forkwise import gpu
from forkwise.matrix.records.types import Environment

HOST_LABEL_VAR = "FORKWISE_HOST_LABEL"

PACKAGES = (
    "forkwise", "tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib", "torch", "numpy",
    "flask", "sqlalchemy", "gunicorn", "pyuwsgi", "psutil", "nvidia-ml-py",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git(*args: str) -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), *args], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def _git_commit() -> str:
    """HEAD, with "+modified" when tracked files other than results/ and Markdown differ from
    it: a record must not claim a commit whose code is not what ran (prose cannot change it)."""
    head = _git("rev-parse", "HEAD")
    if head is None:
        return "unknown"
    changed = _git("status", "--porcelain", "--untracked-files=no", "--", ":/", ":(top,exclude)results",
                   ":(top,exclude,glob)**/*.md")
    return head.strip() + ("+modified" if changed else "")


def _versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def host_label() -> str:
    """The user's name for this host (FORKWISE_HOST_LABEL), else its hostname: stable for a
    machine. Runners of one CI matrix get fresh hostnames, so a workflow sets the label."""
    return os.environ.get(HOST_LABEL_VAR, "").strip() or socket.gethostname() or "unknown"


@lru_cache(maxsize=1)
def current() -> Environment:
    gpus = gpu.probe()
    return Environment(
        date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        git_commit=_git_commit(),
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
        python=sys.version.split()[0],
        platform=platform.platform(),
        packages=_versions(),
        gpu_name=gpus.name,
        gpu_driver=gpus.driver,
        gpu_memory_mb=gpus.memory_mb,
        host_label=host_label(),
    )
