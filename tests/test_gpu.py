"""The GPU leg, on a CPU: policy env, device hiding, OOM evidence, NVML/nvidia-smi parsing,
the missing-GPU skip and error, the backend axis, and the guarded backend imports."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from forkwise import cli, deploy, gpu
from forkwise.config import AppSettings
from forkwise.errors import ConfigError, ModelError
from forkwise.matrix import commands
from forkwise.matrix.records.axes import Cell
from forkwise.matrix.records.types import CellRecord, Memory, ProcessMemory, Verdict
from forkwise.matrix.run import cell_process, resources, runner
from forkwise.matrix.run.cell import Verification
from forkwise.matrix.verdicts import LogSeen, oom_evidence
from forkwise.model import spec as spec_mod
from forkwise.model.spec import ModelSpec
from host_pace import command_bound_s

BASE = dict(strategy="lazy", model_spec=Path("/x/spec.json"), database_url="sqlite:///x.db", run_dir=Path("/x"))


# --- no GPU, deterministically: neither NVML nor nvidia-smi ---------------------------------


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(gpu, "_pynvml", lambda: None)
    monkeypatch.setattr(gpu.shutil, "which", lambda name: None)


def fake_smi(monkeypatch, outputs: dict[str, str]):
    """nvidia-smi on PATH, answering each --query-* flag with canned text."""
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        flag = next(a for a in argv if a.startswith("--query"))
        return subprocess.CompletedProcess(argv, 0, stdout=outputs[flag.split("=")[0]], stderr="")

    monkeypatch.setattr(gpu, "_pynvml", lambda: None)
    monkeypatch.setattr(gpu.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    monkeypatch.setattr(gpu.subprocess, "run", run)
    return calls


# --- the memory policy --------------------------------------------------------------------


@pytest.mark.parametrize("backend, expected", [
    ("tensorflow", {"TF_FORCE_GPU_ALLOW_GROWTH": "true"}),
    ("jax", {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}),
    ("torch", {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}),
])
def test_grow_policy_per_backend(backend, expected):
    env = gpu.deployment_env(backend, "gpu", "grow", 3)
    assert env == {"KERAS_BACKEND": backend, **expected}
    assert "CUDA_VISIBLE_DEVICES" not in env  # device=gpu leaves the GPUs visible


def test_off_policy_removes_every_policy_variable():
    env = gpu.deployment_env("jax", "gpu", "off", 3)
    assert env["KERAS_BACKEND"] == "jax"
    assert {k for k, v in env.items() if v is None} == set(gpu.POLICY_VARS)


@pytest.mark.parametrize("processes, fraction", [(1, 0.9), (2, 0.45), (3, 0.3), (7, 0.12), (200, 0.01)])
def test_fraction_per_process(processes, fraction):
    assert gpu.per_process_fraction(processes) == fraction
    assert processes * gpu.per_process_fraction(processes) <= gpu.FRACTION_BUDGET or fraction == 0.01


def test_fraction_policy_is_jax_only():
    env = gpu.deployment_env("jax", "gpu", "fraction", 3)
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.30" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true"
    with pytest.raises(ConfigError, match="JAX setting"):
        gpu.deployment_env("torch", "gpu", "fraction", 3)
    with pytest.raises(ConfigError, match="fraction"):
        AppSettings(**BASE, backend="torch", device="gpu", gpu_policy="fraction")
    AppSettings(**BASE, backend="torch", device="cpu", gpu_policy="fraction")  # no GPU, nothing to limit


def test_device_cpu_hides_the_gpu():
    for backend in gpu.BACKENDS:
        env = gpu.deployment_env(backend, "cpu", "grow", 3)
        assert env["CUDA_VISIBLE_DEVICES"] == "" and env["KERAS_BACKEND"] == backend
        assert not set(env) & set(gpu.POLICY_VARS)  # no GPU: no policy
    assert gpu.deployment_env("jax", "cpu", "grow", 1)["JAX_PLATFORMS"] == "cpu"
    assert gpu.clean_cpu_env("torch") == {"KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": ""}


def test_settings_carry_backend_device_policy():
    settings = AppSettings(**BASE, backend="jax", device="gpu", gpu_policy="off")
    assert AppSettings.from_environ(settings.to_environ()) == settings
    assert AppSettings(**BASE).backend == "tensorflow" and AppSettings(**BASE).device == "cpu"
    with pytest.raises(ConfigError, match="FORKWISE_BACKEND.*tensorflow, jax, torch"):
        AppSettings.from_environ(settings.to_environ() | {"FORKWISE_BACKEND": "mxnet"})
    with pytest.raises(ConfigError, match="FORKWISE_DEVICE"):
        AppSettings.from_environ(settings.to_environ() | {"FORKWISE_DEVICE": "tpu"})


class _FakeGroup:
    """Stands in for ProcessGroup: records the environment a launch would start the server with."""

    seen: dict = {}

    def __init__(self, argv, env, log_path, cwd=None):
        _FakeGroup.seen = env

    def start(self):
        return self


@pytest.mark.parametrize("device, policy", [("cpu", "grow"), ("gpu", "grow"), ("gpu", "off")])
def test_launch_hands_the_device_env_to_the_server(tmp_path, monkeypatch, device, policy):
    spec_path = tmp_path / "spec.json"
    ModelSpec("m", tmp_path / "m.keras", tmp_path / "r.npz", "0" * 64, (8,), (1,)).save(spec_path)
    monkeypatch.setattr(deploy, "ProcessGroup", _FakeGroup)
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "true")  # inherited: "off" must remove it
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    d = deploy.make_deployment(strategy="lazy", server="gunicorn-sync", workers=2, spec_path=spec_path,
                               run_dir=tmp_path / "run", port=8123, backend="jax", device=device, gpu_policy=policy)
    deploy.launch(d)
    env = _FakeGroup.seen
    assert env["KERAS_BACKEND"] == "jax" and env["FORKWISE_DEVICE"] == device
    if device == "cpu":
        assert env["CUDA_VISIBLE_DEVICES"] == "" and env["JAX_PLATFORMS"] == "cpu"
    elif policy == "grow":
        assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    else:
        assert env["CUDA_VISIBLE_DEVICES"] == "0" and "XLA_PYTHON_CLIENT_PREALLOCATE" not in env


# --- OOM from log evidence ------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4194304 bytes.",
    "E external/xla/xla/stream_executor/cuda/cuda_driver.cc:1105] failed to alloc: "
    "CUDA_ERROR_OUT_OF_MEMORY: out of memory",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB",
    "torch.cuda.OutOfMemoryError: CUDA out of memory.",
    "tensorflow.python.framework.errors_impl.ResourceExhaustedError: OOM when allocating tensor",
])
def test_oom_is_seen_in_the_log(line):
    log = f"[INFO] Booting worker with pid: 10\nTraceback (most recent call last):\n{line}\n[INFO] Worker exiting"
    assert oom_evidence(LogSeen(log)) == line


def test_no_oom_without_evidence():
    log = ("[CRITICAL] WORKER TIMEOUT (pid:11)\nRuntimeError: Cannot re-initialize CUDA in forked subprocess\n"
           "CUDA_ERROR_NOT_INITIALIZED: Failed setting context\n")
    assert oom_evidence(LogSeen(log)) is None
    assert Verdict("OOM") is Verdict.OOM and not Verdict.OOM.ok


# --- reading the GPU ----------------------------------------------------------------------


def test_parse_nvidia_smi():
    assert gpu.parse_gpu_query("NVIDIA H100 80GB HBM3, 580.159.04, 81559\n") == [
        ("NVIDIA H100 80GB HBM3", "580.159.04", 81559.0)]
    assert gpu.parse_gpu_query("A, comma GPU, 1.0, [N/A]\n\nno fields\n") == [("A, comma GPU", "1.0", 0.0)]
    apps = gpu.parse_apps_query("1234, 888\n1235, 732\n1234, 10\n999, [N/A]\n\ngarbage\n")
    assert apps == {1234: 898.0, 1235: 732.0, 999: 0.0}


def test_probe_through_nvidia_smi(monkeypatch):
    calls = fake_smi(monkeypatch, {
        "--query-gpu": "NVIDIA H100 80GB HBM3, 580.159.04, 81559\n",
        "--query-compute-apps": "4242, 888\n",
    })
    info = gpu.probe()
    assert info == gpu.GpuInfo(count=1, name="NVIDIA H100 80GB HBM3", driver="580.159.04", memory_mb=81559.0,
                               source="nvidia-smi")
    assert gpu.process_memory_mb() == {4242: 888.0}
    assert calls[-1][1:] == ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]


def test_probe_through_nvml(monkeypatch):
    mib = 2**20
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: f"h{i}", nvmlDeviceGetName=lambda h: b"NVIDIA H200",
        nvmlSystemGetDriverVersion=lambda: "580.159.03",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=143771 * mib),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [
            types.SimpleNamespace(pid=7, usedGpuMemory=512 * mib), types.SimpleNamespace(pid=8, usedGpuMemory=None)],
    )
    monkeypatch.setattr(gpu, "_pynvml", lambda: fake)
    assert gpu.probe() == gpu.GpuInfo(count=1, name="NVIDIA H200", driver="580.159.03", memory_mb=143771.0,
                                      source="nvml")
    assert gpu.process_memory_mb() == {7: 512.0, 8: 0.0}


def test_no_gpu_is_a_reason_not_a_crash(no_gpu):
    info = gpu.probe()
    assert not info.available and "not on PATH" in info.reason and "pynvml" in info.reason
    assert gpu.process_memory_mb() is None
    with pytest.raises(gpu.NoGpuError, match=r"no GPU found \(") as err:
        gpu.require_gpu()
    assert isinstance(err.value, ConfigError)


def test_process_memory_gpu_mb(monkeypatch, no_gpu):
    me = resources.measure_memory(os.getpid())
    assert me.processes and all(p.gpu_mb is None for p in me.processes) and me.total_gpu_mb is None
    monkeypatch.setattr(gpu, "process_memory_mb", lambda: {os.getpid(): 700.5})
    me = resources.measure_memory(os.getpid())
    mine = next(p for p in me.processes if p.pid == os.getpid())
    assert mine.gpu_mb == 700.5 and me.total_gpu_mb >= 700.5
    assert Memory.of([ProcessMemory("worker", 1, 1.0, 1.0, 1.0, 0.1)]).total_gpu_mb is None


# --- the missing-GPU skip and error ---------------------------------------------------------


def test_cli_device_gpu_without_gpu_is_one_line(no_gpu, tmp_path, capsys):
    code = cli.main(["--home", str(tmp_path), "cell", "--strategy", "lazy", "--server", "uwsgi", "--device", "gpu",
                     "--backend", "jax"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: no GPU found (") and err.count("\n") == 1
    assert "Traceback" not in err and not (tmp_path / "models").exists()  # nothing built first


def test_matrix_skips_gpu_cells_without_gpu(no_gpu, tmp_path, capsys):
    out = tmp_path / "out"
    code = commands.run_matrix(profile="gpu", only=[], out=out, resume=False, plain=True, home=tmp_path)
    err = capsys.readouterr().err
    assert code == 0 and f"skipping {len(runner.load_profile('gpu').cells)} gpu cells: no GPU found (" in err
    assert not out.exists()  # no records, no report
    cells = runner.load_profile("quick").cells + runner.load_profile("gpu").cells[:2]
    kept, skipped = runner.skip_gpu_cells(list(cells))
    assert all(c.device == "cpu" for c in kept) and len(kept) == len(cells) - 2
    assert len(skipped["cells"]) == 2 and skipped["reason"].startswith("no GPU found")


def test_matrix_keeps_gpu_cells_with_a_gpu(monkeypatch):
    monkeypatch.setattr(gpu, "probe", lambda: gpu.GpuInfo(count=1, name="G", driver="1", source="nvml"))
    cells = list(runner.load_profile("gpu").cells)
    assert runner.skip_gpu_cells(cells) == (cells, {})


# --- the backend axis, the profile, the record ----------------------------------------------


def test_gpu_profile():
    profile = runner.load_profile("gpu")
    assert len(profile.cells) == 36 and profile.gpu_policy == "grow"
    assert {c.backend for c in profile.cells} == {"jax", "torch"} and {c.device for c in profile.cells} == {"gpu"}
    assert {c.strategy for c in profile.cells} == {"lazy", "child-process-batched", "control"}
    assert {c.workers for c in profile.cells} == {2, 8}
    assert {c.server for c in profile.cells} == {"gunicorn-gthread", "uwsgi-threads", "gunicorn-gevent"}
    assert max(profile.load.levels) == 64  # more connections than 8 workers x 4 threads
    # ... which 8 workers holding 8 requests each (or gevent's 64) take in at once: full batches.
    wide = [c for c in profile.cells if c.workers == 8 and (c.in_flight or c.server == "gunicorn-gevent")]
    assert {c.strategy for c in wide} == {"control", "child-process-batched"} and len(wide) == 8
    cell = profile.cells[0]
    plan = cell_process.cell_plan(cell, profile)
    assert plan.device == "gpu" and plan.backend == cell.backend
    assert plan.gpu_policy == "grow"


def test_backend_axis_and_policy_in_a_profile(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('gpu_policy = "off"\n[axes]\nstrategy = ["lazy"]\nserver = ["uwsgi"]\nworkers = [2]\n'
                    'model = ["default"]\nbackend = ["tensorflow", "torch"]\n')
    profile = runner.load_profile(str(path))
    assert [c.id for c in profile.cells] == ["lazy/uwsgi/w2/default/cpu/steady",
                                             "lazy/uwsgi/w2/default/cpu/torch/steady"]
    assert profile.gpu_policy == "off"
    assert [c.id for c in profile.select(runner.parse_only(["backend=torch"]))] == [profile.cells[1].id]
    path.write_text(path.read_text().replace('"torch"]', '"mxnet"]'))
    with pytest.raises(ConfigError, match="mxnet"):
        runner.load_profile(str(path))
    path.write_text(path.read_text().replace('"mxnet"]', '"torch"]').replace('"off"', '"sometimes"'))
    with pytest.raises(ConfigError, match="gpu_policy"):
        runner.load_profile(str(path))


def test_cell_id_is_stable_for_tensorflow():
    assert Cell(strategy="lazy", server="uwsgi").id == "lazy/uwsgi/w2/default/cpu/steady"
    gpu_cell = Cell(strategy="lazy", server="uwsgi", device="gpu", backend="jax")
    assert gpu_cell.id == "lazy/uwsgi/w2/default/gpu/jax/steady"


def _old_record_dict() -> dict:
    from forkwise.matrix.records.types import Environment, ErrorCounts, Evidence

    record = CellRecord.of(
        strategy="lazy", server="uwsgi", workers=2, threads=1, model="default", device="cpu", verdict=Verdict.OK,
        cold_start_s=1.0, warm_all_s=1.0, requests=1, ok=1, errors=ErrorCounts(), rows_expected=1, rows_found=1,
        worker_pids=(1,), evidence=Evidence(),
        environment=Environment(date="d", git_commit="c", cpu_model="m", cores=2, memory_gb=1.0, python="3.11",
                                platform="p", packages={}),
        started_at="s", duration_s=1.0,
        memory=Memory.of([ProcessMemory("worker", 1, 1.0, 1.0, 1.0, 0.1)]),
    )
    data = record.to_dict()
    # What a record written before the GPU leg holds: none of the new fields.
    del data["backend"], data["environment"]["gpu_name"], data["environment"]["gpu_driver"]
    del data["memory"]["total_gpu_mb"], data["memory"]["processes"][0]["gpu_mb"]
    return data


def test_records_without_gpu_fields_still_load():
    back = CellRecord.from_dict(_old_record_dict())
    assert back.backend == "tensorflow" and back.cell_id == "lazy/uwsgi/w2/default/cpu/steady"
    assert back.environment.gpu_name == "" and back.memory.processes[0].gpu_mb is None


# --- tolerance ------------------------------------------------------------------------------


def test_tolerance_per_device(tmp_path):
    ref = tmp_path / "r.npz"
    outputs = np.array([[0.5], [1.0]], np.float32)
    np.savez(ref, inputs=np.zeros((2, 8), np.float32), outputs=outputs)
    spec = ModelSpec("m", tmp_path / "m.keras", ref, "0" * 64, (8,), (1,))
    digests = [Verification(spec, True, None).digest(i) for i in (0, 1)]
    body = {"predictions": (outputs * (1 + 3e-3)).tolist(), "ids": [1, 2], "digests": digests, "worker": 5}
    assert not Verification(spec, True, None, gpu.tolerance("cpu")).compare(body, [0, 1])[0]
    assert Verification(spec, True, None, gpu.tolerance("gpu")).compare(body, [0, 1])[0]
    far = {**body, "predictions": (outputs + 0.05).tolist()}
    assert not Verification(spec, True, None, gpu.tolerance("gpu")).compare(far, [0, 1])[0]


# --- references per backend, guarded backend imports ----------------------------------------


def test_reference_folder_per_backend(tmp_path, monkeypatch):
    model = tmp_path / "mine.keras"
    model.write_bytes(b"not really a model")
    runs = []

    def fake_run(args, what, backend="tensorflow"):
        runs.append((args[0], backend))
        return json.dumps({"input_shape": [8], "output_shape": [1]})

    monkeypatch.setattr(spec_mod, "_run_clean", fake_run)
    monkeypatch.setattr(gpu, "backend_installed", lambda backend: True)
    tf_spec = spec_mod.ensure_spec(tmp_path, str(model))
    torch_spec = spec_mod.ensure_spec(tmp_path, str(model), backend="torch")
    assert tf_spec.parent.name.endswith("-tensorflow") and torch_spec.parent.name.endswith("-torch")
    assert ModelSpec.load(torch_spec).backend == "torch"
    assert spec_mod.ensure_spec(tmp_path, str(model), backend="torch") == torch_spec
    assert runs == [("--reference", "tensorflow"), ("--reference", "torch")]  # once per (digest, backend)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_missing_backend_is_a_model_error(backend, tmp_path):
    if importlib.util.find_spec(backend) is not None:
        pytest.skip(f"{backend} is installed here")
    with pytest.raises(ModelError, match=rf"pip install 'forkwise\[{backend}\]'"):
        spec_mod.ensure_spec(tmp_path, "tiny", backend=backend)
    from forkwise.model import runtime

    with pytest.raises(ModelError, match=rf"forkwise\[{backend}\]"):
        runtime._import_backend(backend)


def test_load_predictor_without_the_backend_says_which_extra(tmp_path):
    if importlib.util.find_spec("jax") is not None:
        pytest.skip("jax is installed here")
    code = ("from forkwise.model.runtime import load_predictor\n"
            "from forkwise.errors import ModelError\n"
            "try:\n    load_predictor('/nowhere.keras')\n"
            "except ModelError as exc:\n    print('ModelError:', exc)\n")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=command_bound_s())
    assert "ModelError:" in out.stdout and "pip install 'forkwise[jax]'" in out.stdout, out.stderr[-500:]
