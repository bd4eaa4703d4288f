"""Devices, Keras backends and the GPU memory policy, as data; plus reading the GPU through NVML.

Which process runs what:

- ``deployment_env`` and ``clean_cpu_env`` run in the launcher (``forkwise cell``/``serve``,
  and the process that builds a model or its reference set). They only compute environment
  dicts; ``deploy.launch`` and ``model.spec`` apply them to the processes they start, so every
  process of a deployment (master, workers, model server) inherits the device, the backend
  and the memory policy before it imports the ML runtime. Nothing here sets ``os.environ``.
- ``probe``, ``require_gpu`` and ``process_memory_mb`` run in the launcher, the matrix runner
  and the cell process. They read the GPU through NVML (``pynvml``, from nvidia-ml-py) when it
  is importable, else through ``nvidia-smi``; they never create a CUDA context.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import subprocess
from dataclasses import dataclass
from types import ModuleType

from forkwise.errors import ConfigError

DEVICES = ("cpu", "gpu")
DEFAULT_DEVICE = "cpu"  # every GPU hidden from the deployment unless it asks for one
BACKENDS = ("tensorflow", "jax", "torch")
# grow: allocate as needed (TF memory growth, JAX no preallocation, torch expandable segments).
# fraction: JAX preallocates a fixed fraction per process (XLA_PYTHON_CLIENT_MEM_FRACTION).
# off: nothing is set, and inherited policy variables are removed: the frameworks' defaults.
GPU_POLICIES = ("grow", "fraction", "off")
DEFAULT_BACKEND = "tensorflow"
DEFAULT_GPU_POLICY = "grow"

# What the installed extra is called, for the error that says how to get a backend.
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
BACKEND_EXTRAS = {"tensorflow": "forkwise", "jax": "forkwise[jax]", "torch": "forkwise[torch]"}

# Every variable a policy may set: "off" removes them so an inherited one cannot act.
POLICY_VARS = (
    "TF_FORCE_GPU_ALLOW_GROWTH",
    "XLA_PYTHON_CLIENT_PREALLOCATE",
    "XLA_PYTHON_CLIENT_MEM_FRACTION",
    "PYTORCH_CUDA_ALLOC_CONF",
)
# Share of the GPU's memory the "fraction" policy hands out, all processes together.
FRACTION_BUDGET = 0.9

# Output tolerance (rtol, atol) against the reference set, which is computed on CPU. On a GPU,
# JAX runs float32 matmuls in TF32 by default on Ampere and later (10-bit mantissa operands),
# and cuBLAS picks other reduction orders. scripts/tf32-tolerance.py simulates TF32 on the
# default model: largest error 5.7e-4 on outputs of 0.008 to 1.14, which (1e-3, 1e-4) misses
# on 8 of 64 rows (worst 4.7x over); (1e-2, 2e-3) holds it at 0.26 of the bound. Answers of
# another model or other weights differ by orders of magnitude more, so WRONG is still seen.
TOLERANCES = {"cpu": (1e-5, 1e-6), "gpu": (1e-2, 2e-3)}


def check_choice(name: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ConfigError(f"{name} must be one of {', '.join(valid)}, got {value!r}")
    return value


def tolerance(device: str) -> tuple[float, float]:
    """(rtol, atol) for comparing a device's answers with the CPU reference set."""
    return TOLERANCES[check_choice("device", device, DEVICES)]


def per_process_fraction(gpu_processes: int, budget: float = FRACTION_BUDGET) -> float:
    """Each process's share of GPU memory, rounded down to a hundredth (at least 0.01)."""
    if gpu_processes < 1:
        raise ConfigError(f"the number of GPU processes must be at least 1, got {gpu_processes}")
    return max(0.01, math.floor(budget / gpu_processes * 100) / 100)


def policy_env(backend: str, policy: str, gpu_processes: int) -> dict[str, str | None]:
    """The memory-policy variables for a GPU deployment. A value of None means: remove it."""
    check_choice("backend", backend, BACKENDS)
    check_choice("gpu_policy", policy, GPU_POLICIES)
    if policy == "off":
        return {name: None for name in POLICY_VARS}
    if policy == "fraction":
        if backend != "jax":
            raise ConfigError(
                f"gpu_policy 'fraction' is a JAX setting (XLA_PYTHON_CLIENT_MEM_FRACTION); {backend} takes a "
                "per-process limit only through its own API, not the environment: use gpu_policy 'grow'"
            )
        return {
            "XLA_PYTHON_CLIENT_PREALLOCATE": "true",
            "XLA_PYTHON_CLIENT_MEM_FRACTION": f"{per_process_fraction(gpu_processes):.2f}",
        }
    grow: dict[str, dict[str, str | None]] = {
        "tensorflow": {"TF_FORCE_GPU_ALLOW_GROWTH": "true"},
        "jax": {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"},
        # Torch allocates on demand already; the strategies keep CUDA calls out of the master.
        "torch": {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"},
    }
    return grow[backend]


def deployment_env(backend: str, device: str, policy: str, gpu_processes: int) -> dict[str, str | None]:
    """What every process of one deployment must inherit. None means: remove the variable.

    device=cpu hides every GPU (and pins JAX to its CPU platform), even on a GPU host;
    device=gpu leaves the GPUs visible and applies the memory policy.
    """
    check_choice("device", device, DEVICES)
    env: dict[str, str | None] = {"KERAS_BACKEND": check_choice("backend", backend, BACKENDS)}
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""
        if backend == "jax":
            env["JAX_PLATFORMS"] = "cpu"
        return env
    env.update(policy_env(backend, policy, gpu_processes))
    return env


def clean_cpu_env(backend: str) -> dict[str, str]:
    """For the clean process that builds a model or computes its reference set: the backend, on CPU."""
    return {k: v for k, v in deployment_env(backend, "cpu", "off", 1).items() if v is not None}


def backend_installed(backend: str) -> bool:
    return importlib.util.find_spec(BACKEND_MODULES[check_choice("backend", backend, BACKENDS)]) is not None


def backend_missing_message(backend: str) -> str:
    return f"the Keras backend {backend!r} is not installed here: pip install '{BACKEND_EXTRAS[backend]}'"


# --- reading the GPU --------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuInfo:
    """The GPUs of this host, as NVML or nvidia-smi report them; count 0 when none was found."""

    count: int = 0
    name: str = ""  # the first GPU's name ("NVIDIA H100 80GB HBM3")
    driver: str = ""
    memory_mb: float = 0.0  # the first GPU's memory, MiB: what a deployment's share is taken of
    source: str = ""  # "nvml", "nvidia-smi" or "" (none found)
    reason: str = ""  # why none was found

    @property
    def available(self) -> bool:
        return self.count > 0


class NoGpuError(ConfigError):
    """device=gpu was asked for on a host without a usable NVIDIA GPU."""


SMI_TIMEOUT_S = 10


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pynvml() -> ModuleType | None:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None
    return pynvml


def _smi(args: list[str]) -> str | None:
    """nvidia-smi's stdout, or None when it is absent or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        proc = subprocess.run([exe, *args], capture_output=True, text=True, timeout=SMI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def parse_gpu_query(text: str) -> list[tuple[str, str, float]]:
    """`nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader,nounits`
    -> [(name, driver, MiB)]. A name may hold commas; the last two fields never do."""
    rows = []
    for line in text.splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) != 3:
            continue
        name, driver, memory = (p.strip() for p in parts)
        try:
            mib = float(memory)
        except ValueError:  # "[N/A]"
            mib = 0.0
        rows.append((name, driver, mib))
    return rows


def parse_apps_query(text: str) -> dict[int, float]:
    """`nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits` -> {pid: MiB}.

    A process on several GPUs appears once per GPU: its memory is summed. Unreadable
    values ("[N/A]", "[Insufficient Permissions]") count as 0.
    """
    found: dict[int, float] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        try:
            mb = float(parts[1])
        except ValueError:
            mb = 0.0
        found[int(parts[0])] = found.get(int(parts[0]), 0.0) + mb
    return found


def probe() -> GpuInfo:
    """The GPUs of this host. Never raises: a host without a GPU is a GpuInfo with count 0."""
    nvml = _pynvml()
    if nvml is not None:
        try:
            nvml.nvmlInit()
            try:
                count = nvml.nvmlDeviceGetCount()
                if count:
                    first = nvml.nvmlDeviceGetHandleByIndex(0)
                    return GpuInfo(
                        count=count, name=_text(nvml.nvmlDeviceGetName(first)),
                        driver=_text(nvml.nvmlSystemGetDriverVersion()),
                        memory_mb=round(nvml.nvmlDeviceGetMemoryInfo(first).total / 2**20, 1), source="nvml",
                    )
            finally:
                nvml.nvmlShutdown()
        except Exception:  # NVMLError and its many subclasses: fall through to nvidia-smi
            pass
    out = _smi(["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader,nounits"])
    if out is None:
        why = "pynvml " + ("found no GPU" if nvml is not None else "is not importable")
        why += " and nvidia-smi " + ("failed" if shutil.which("nvidia-smi") else "is not on PATH")
        return GpuInfo(reason=why)
    rows = parse_gpu_query(out)
    if not rows:
        return GpuInfo(reason="nvidia-smi lists no GPU")
    name, driver, memory_mb = rows[0]
    return GpuInfo(count=len(rows), name=name, driver=driver, memory_mb=memory_mb, source="nvidia-smi")


def require_gpu() -> GpuInfo:
    """The GPUs, or NoGpuError saying why none was found."""
    info = probe()
    if not info.available:
        raise NoGpuError(f"no GPU found ({info.reason}); device=gpu needs an NVIDIA GPU and its driver")
    return info


def process_memory_mb() -> dict[int, float] | None:
    """GPU memory (MiB) each process holds, over every GPU; None on a host without a GPU."""
    nvml = _pynvml()
    if nvml is not None:
        try:
            nvml.nvmlInit()
            try:
                found: dict[int, float] = {}
                for i in range(nvml.nvmlDeviceGetCount()):
                    handle = nvml.nvmlDeviceGetHandleByIndex(i)
                    for proc in nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                        used = proc.usedGpuMemory or 0  # None when the driver cannot say
                        found[proc.pid] = found.get(proc.pid, 0.0) + used / 2**20
                if nvml.nvmlDeviceGetCount():
                    return found
            finally:
                nvml.nvmlShutdown()
        except Exception:
            pass
    out = _smi(["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"])
    if out is None:
        return None
    return parse_apps_query(out)
