"""Settings, declared as frozen dataclasses with small validators, read in one place.

A deployment is described once by the launcher (``forkwise cell``/``serve``) and
handed to the server's processes as ``FORKWISE_*`` environment variables: that is
the only channel Gunicorn and uWSGI pass to every worker. ``AppSettings.from_environ``
is the only code in forkwise that reads those variables; ``to_environ`` writes them.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from forkwise.checks import BOOL, FLOAT, INT, PATH, TEXT, above, one_of, required, validator
from forkwise.errors import ConfigError
from forkwise.gpu import BACKENDS, DEFAULT_BACKEND, DEFAULT_DEVICE, DEFAULT_GPU_POLICY, DEVICES, GPU_POLICIES

ENV_PREFIX = "FORKWISE_"
# What a forked worker does with the database engine its master made (forkwise.webapp.db):
# new-engine (its own, made after fork), dispose (dispose(close=False) after fork), nullpool
# (nothing pooled), none (the inherited pool as it is: the hazard).
DB_RESET_POLICIES = ("new-engine", "dispose", "nullpool", "none")
DEFAULT_DB_RESET = "new-engine"
# The database a deployment writes to, and how the app reaches it: a SQLite file in the run
# directory, or a PostgreSQL server forkwise starts for it (forkwise.postgres) over loopback TCP
# with TLS, or over its Unix socket.
DATABASE_TRANSPORTS: dict[str, str | None] = {"sqlite": None, "postgresql": "tls", "postgresql-unix": "unix"}
DATABASES = tuple(DATABASE_TRANSPORTS)
DEFAULT_DATABASE = "sqlite"
# The sizes a model server pads each call up to (forkwise.modelserver.server): "pow2", the powers
# of two up to max_batch (TF Serving's allowed_batch_sizes); "any", no padding (a JIT runtime then
# compiles each new size while requests wait); or the sizes themselves, e.g. "1,8,32".
BATCH_SIZE_POLICIES = ("pow2", "any")
DEFAULT_BATCH_SIZES = "pow2"
# The runtime's intra-op threads per process, as a profile names them: the runtime's default, the
# host's cores shared out among the workers ("per-worker"), or a number.
THREAD_LABELS = ("default", "per-worker")


# Each setting's check, from the one family of checks (forkwise.checks): (name, value) -> value,
# text (an environment variable) parsed, a value loaded, a ConfigError naming the variable otherwise.
_positive_int = validator(INT, above(1, inclusive=True))
_positive_float = validator(FLOAT, above(0))
_non_negative_int = validator(INT, above(0, inclusive=True))
_bool = validator(BOOL)
_required_str = validator(TEXT, required)
_path = validator(PATH)


def _batch_sizes(name: str, value: Any) -> str:
    text = str(value).replace(" ", "")
    if text in BATCH_SIZE_POLICIES:
        return text
    try:
        sizes = sorted({int(x) for x in text.split(",")})
    except ValueError:
        raise ConfigError(f"{name} must be {' or '.join(BATCH_SIZE_POLICIES)} or sizes like 1,8,32; "
                          f"got {value!r}") from None
    if sizes[0] < 1:
        raise ConfigError(f"{name}: every batch size must be at least 1, got {value!r}")
    return ",".join(map(str, sizes))


def allowed_batch_sizes(setting: str, max_batch: int) -> tuple[int, ...]:
    """The sizes a model server pads its calls up to, smallest first; () for "any" (no padding)."""
    if setting == "any":
        return ()
    if setting == "pow2":
        sizes = [1 << k for k in range(max_batch.bit_length()) if 1 << k < max_batch]
        return (*sizes, max_batch)
    return tuple(int(x) for x in setting.split(","))


def resolve_threads(label: str | int, workers: int, cores: int) -> int:
    """A threads label (THREAD_LABELS, or a number) -> intra-op threads per process; 0: the runtime's default."""
    if label == "default":
        return 0
    if label == "per-worker":
        return max(1, cores // workers)
    return _positive_int(f"threads {label!r}", str(label))


def _choice(valid: tuple[str, ...]) -> Callable[[str, Any], Any]:
    return validator(TEXT, one_of(valid))


def default_home() -> Path:
    """Where forkwise keeps built models and reference sets (FORKWISE_HOME overrides)."""
    return Path(os.environ.get("FORKWISE_HOME") or Path.home() / ".cache" / "forkwise")


def _setting(validate: Callable[[str, Any], Any], default: Any = dataclasses.MISSING) -> Any:
    """A field of AppSettings with the check its value passes (under its env name, FORKWISE_<NAME>)."""
    return field(default=default, metadata={"validate": validate})


@dataclass(frozen=True)
class AppSettings:
    """What every process of a deployment needs to build the web app.

    Read by the master (when the app is preloaded) and by every worker.
    """

    strategy: str = _setting(_required_str)
    model_spec: Path = _setting(_path)  # the spec.json that names the .keras file and its reference set
    database_url: str = _setting(_required_str)
    run_dir: Path = _setting(_path)  # private directory for locks and the model server's socket
    preload_app: bool = _setting(_bool, False)  # True: the server builds the app in its master, before fork
    max_instances: int = _setting(_positive_int, 256)
    max_body_bytes: int = _setting(_positive_int, 4 * 1024 * 1024)
    model_timeout_s: float = _setting(_positive_float, 10.0)  # how long a worker waits on the model server
    db_busy_timeout_s: float = _setting(_positive_float, 10.0)
    max_batch: int = _setting(_positive_int, 32)  # model-server batching: rows per batch at most
    # model-server batching: the longest a batch that could run is held for more rows
    max_wait_ms: float = _setting(_positive_float, 1.0)
    # the sizes the model server pads each call up to (BATCH_SIZE_POLICIES)
    batch_sizes: str = _setting(_batch_sizes, DEFAULT_BATCH_SIZES)
    # The runtime's intra-op (and inter-op) threads in each process that loads the model; 0: its default.
    intra_op_threads: int = _setting(_non_negative_int, 0)
    # The interpreter that helper processes (the model server) run with. Not sys.executable
    # inside a worker: under pyuwsgi that names the base interpreter, not the virtualenv's.
    python: str = _setting(_required_str, sys.executable)
    # the Keras backend (KERAS_BACKEND): tensorflow, jax or torch
    backend: str = _setting(_choice(BACKENDS), DEFAULT_BACKEND)
    device: str = _setting(_choice(DEVICES), DEFAULT_DEVICE)  # cpu: every GPU hidden from the deployment; gpu: visible
    # GPU memory policy (forkwise.gpu): grow, fraction or off
    gpu_policy: str = _setting(_choice(GPU_POLICIES), DEFAULT_GPU_POLICY)
    # what a forked worker does with an inherited engine (DB_RESET_POLICIES)
    db_reset: str = _setting(_choice(DB_RESET_POLICIES), DEFAULT_DB_RESET)
    # True: the app queries the database in the master before fork, as apps that preload do (only
    # a preloaded app has a master that runs it).
    db_in_master: bool = _setting(_bool, False)
    extra: dict[str, str] = field(default_factory=dict)  # strategy-specific knobs

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if "validate" in f.metadata:
                object.__setattr__(self, f.name, f.metadata["validate"](_env_name(f.name), getattr(self, f.name)))
        if self.device == "gpu" and self.gpu_policy == "fraction" and self.backend != "jax":
            raise ConfigError(
                f"{_env_name('gpu_policy')} 'fraction' is a JAX setting (XLA_PYTHON_CLIENT_MEM_FRACTION); "
                f"{self.backend} takes a per-process limit only through its own API: use 'grow'"
            )

    def to_environ(self) -> dict[str, str]:
        env = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            env[_env_name(f.name)] = str(getattr(self, f.name))
        for key, value in self.extra.items():
            env[f"{ENV_PREFIX}X_{key.upper()}"] = value
        return env

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> AppSettings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                continue
            name = _env_name(f.name)
            if name in environ:
                values[f.name] = environ[name]
        missing = [
            _env_name(f.name)
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values
        ]
        if missing:
            raise ConfigError(
                f"missing {', '.join(missing)}: start the app with `forkwise serve`, or set them yourself"
            )
        xprefix = f"{ENV_PREFIX}X_"
        values["extra"] = {k[len(xprefix):].lower(): v for k, v in environ.items() if k.startswith(xprefix)}
        return cls(**values)


def _env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()
