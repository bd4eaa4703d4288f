"""The threads axis: the runtime's intra-op threads per process (default, per-worker, a number),
from a profile to the runtime in the process that loads the model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from forkwise.config import AppSettings, resolve_threads
from forkwise.errors import ConfigError
from forkwise.matrix.records.axes import Cell
from forkwise.matrix.records.types import CellRecord
from forkwise.matrix.run import cell_process, runner
from host_pace import command_bound_s


def test_labels_resolve_to_threads_per_process():
    assert resolve_threads("default", 2, 16) == 0  # the runtime's own default
    assert resolve_threads("per-worker", 4, 16) == 4
    assert resolve_threads("per-worker", 4, 2) == 1  # never below one
    assert resolve_threads("1", 8, 16) == 1 and resolve_threads(3, 8, 16) == 3
    with pytest.raises(ConfigError):
        resolve_threads("many", 2, 2)
    with pytest.raises(ConfigError):
        AppSettings(strategy="lazy", model_spec="s", database_url="d", run_dir="r", intra_op_threads=-1)


def test_the_threads_profile_oversubscribes_the_cores():
    profile = runner.load_profile("threads")
    labels = {c.runtime_threads for c in profile.cells}
    assert labels == {"default", "per-worker", "1"}
    cores = os.cpu_count() or 1
    # The runtime's default takes every core in every process: workers x threads > cores somewhere.
    assert any(c.workers * (resolve_threads(c.runtime_threads, c.workers, cores) or cores) > cores
               for c in profile.cells)
    ids = {c.id for c in profile.cells}
    assert len(ids) == len(profile.cells)  # the threads are part of a cell's identity
    assert "lazy/gunicorn-gthread/w2/default/cpu/threads-per-worker/steady" in ids
    assert "lazy/gunicorn-gthread/w2/default/cpu/steady" in ids  # the default keeps the id it had


def test_a_profile_refuses_a_bad_threads_value(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[axes]\nstrategy = ["lazy"]\nserver = ["uwsgi"]\nworkers = [2]\nmodel = ["default"]\n'
                   'runtime_threads = ["all"]\n')
    with pytest.raises(ConfigError, match="axis runtime_threads"):
        runner.load_profile(str(bad))


def test_the_runner_hands_the_threads_to_the_cell_and_the_record_keeps_them():
    profile = runner.load_profile("threads")
    cell = next(c for c in profile.cells if c.runtime_threads == "per-worker")
    assert cell_process.cell_plan(cell, profile).runtime_threads == "per-worker"
    record = cell_process.failed_cell_record(cell, cell_process.verdicts.judge_no_record(1), "", 1.0)
    assert record.runtime_threads == "per-worker" and record.cell_id == cell.id
    assert CellRecord.from_dict(json.loads(record.to_json())).runtime_threads == "per-worker"
    assert Cell(strategy="lazy", server="uwsgi", runtime_threads="1").id.endswith("/threads-1/steady")


# What a worker does with its settings (create_app, not preloaded: post_fork loads the model),
# in a process of its own: TensorFlow takes its threading only before it starts.
WORKER = """
import json
import tensorflow as tf
from forkwise.webapp import create_app
app = create_app()
state = app.extensions["forkwise"]
print(json.dumps({"runtime": tf.config.threading.get_intra_op_parallelism_threads(),
                  "inter": tf.config.threading.get_inter_op_parallelism_threads(),
                  "predictor": state.strategy._predictor.threads, "ready": state.ready}))
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_the_setting_reaches_the_runtime_in_the_worker(threads, tiny_spec_path, tmp_path):
    settings = AppSettings(strategy="lazy", model_spec=tiny_spec_path, database_url=f"sqlite:///{tmp_path / 'db'}",
                           run_dir=tmp_path, preload_app=False, intra_op_threads=threads)
    env = {**os.environ, **settings.to_environ(), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True,
                         timeout=command_bound_s())
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"runtime": threads, "inter": threads, "predictor": threads, "ready": True}


def test_the_model_server_runs_with_the_threads_it_is_given(tiny_spec_path, tmp_path):
    sock = tmp_path / "m.sock"
    proc = subprocess.Popen([sys.executable, "-m", "forkwise.modelserver.server", "--socket", str(sock),
                             "--spec", str(tiny_spec_path), "--max-batch", "8", "--threads", "1"],
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    try:
        lines = []
        for line in proc.stderr:  # until it says it is ready (or exits)
            lines.append(line)
            if "ready on" in line:
                break
        ready = [line for line in lines if "ready on" in line]
        assert ready, "".join(lines)[-2000:]
        assert "threads=1" in ready[0] and "batch sizes 1,2,4,8" in ready[0]
        assert any("warmed batch sizes 1 (" in line for line in lines)  # every size compiled before ready
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stderr.close()
