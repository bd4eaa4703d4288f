"""Environment metadata for every record: where and with what it was measured.

Runs in the cell process and the matrix runner; the GPU is read through NVML or nvidia-smi.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import sys
from functools import lru_cache
from pathlib import Path

import psutil

from forkwise import gpu, provenance
from forkwise.matrix.records.types import Environment

HOST_LABEL_VAR = "FORKWISE_HOST_LABEL"

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_label() -> str:
    """The user's name for this host (FORKWISE_HOST_LABEL), else its hostname: stable for a
    machine. Runners of one CI matrix get fresh hostnames, so a workflow sets the label."""
    return os.environ.get(HOST_LABEL_VAR, "").strip() or socket.gethostname() or "unknown"


@lru_cache(maxsize=1)
def current() -> Environment:
    gpus = gpu.probe()
    return Environment(
        date=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        git_commit=provenance.git_commit(),
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        memory_gb=round(psutil.virtual_memory().total / 2**30, 1),
        python=sys.version.split()[0],
        platform=platform.platform(),
        packages=provenance.package_versions(),
        gpu_name=gpus.name,
        gpu_driver=gpus.driver,
        gpu_memory_mb=gpus.memory_mb,
        host_label=host_label(),
    )
