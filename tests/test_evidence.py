"""What a cell's record says about why: telling log lines (generic and each server's own), OOM
evidence, hung workers, GPU memory per process in RESULTS.md, and the commit a record claims."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from forkwise import provenance
from forkwise.matrix.publish.report import gpu_memory_section, render_markdown
from forkwise.matrix.records.types import Memory, ProcessMemory, Verdict
from forkwise.matrix.run.evidence import hung_workers_finding, log_highlights, server_log_evidence
from forkwise.matrix.verdicts import Judgement, LogSeen, oom_evidence
from forkwise.servers.base import ServerAdapter
from forkwise.servers.gunicorn import GunicornSync
from forkwise.servers.uwsgi import Uwsgi
from test_report import environment, record

# Lines as the GPU run's server logs had them (H200, JAX 0.11.2, torch 2.11, gunicorn 27).
GUNICORN_JAX_LOG = """\
[2026-11-26 09:03:13 +0000] [3477] [INFO] Starting gunicorn 27.0.1
/site/gunicorn/arbiter.py:733: RuntimeWarning: os.fork() was called. os.fork() is incompatible with multithreaded \
code, and JAX is multithreaded, so this will likely lead to a deadlock.
  pid = os.fork()
[2026-11-26 09:03:13 +0000] [3627] [INFO] Booting worker with pid: 3627
[2026-11-26 09:03:43 +0000] [3477] [CRITICAL] WORKER TIMEOUT (pid:3627)
[2026-11-26 09:03:44 +0000] [3477] [ERROR] Worker (pid:3627) was sent SIGKILL! Perhaps out of memory?
[2026-11-26 09:04:13 +0000] [3477] [CRITICAL] WORKER TIMEOUT (pid:3641)
[2026-11-26 09:04:14 +0000] [3477] [ERROR] Worker (pid:3641) was sent SIGKILL! Perhaps out of memory?
F1126 09:04:04.091463    3477 cuda_context.cc:190] Check failed: cuda::ToStatus(result, "Failed setting context") \
is OK (INTERNAL: CUDA error: Failed setting context: CUDA_ERROR_NOT_INITIALIZED: initialization error
    @     0x7f706ed98dcb  tsl::AsyncValue::Destroy()
[2026-11-26 09:04:04 +0000] [3477] [WARNING] Worker (pid:3628) was sent SIGABRT!
"""

TORCH_LOG = """\
  File "/opt/torch/.venv/lib/python3.12/site-packages/torch/cuda/__init__.py", line 466, in _lazy_init
    raise RuntimeError(
RuntimeError: Exception encountered when calling Sequential.call().

\x1b[1mCannot re-initialize CUDA in forked subprocess. To use CUDA with multiprocessing, you must use the 'spawn' \
start method\x1b[0m

Arguments received by Sequential.call():
[2026-11-26 08:50:08 +0000] [1391] [INFO] Worker exiting (pid: 1391)
"""


GUNICORN = GunicornSync.telling_log_lines


def test_highlights_keep_the_telling_lines_once_each_in_order():
    lines = log_highlights(GUNICORN_JAX_LOG, GUNICORN)
    assert lines[0].endswith("so this will likely lead to a deadlock.")
    assert lines[1] == "[2026-11-26 09:03:43 +0000] [3477] [CRITICAL] WORKER TIMEOUT (pid:3627)  (x2)"
    assert lines[2].startswith("[2026-11-26 09:03:44 +0000] [3477] [ERROR] Worker (pid:3627) was sent SIGKILL!")
    assert "CUDA_ERROR_NOT_INITIALIZED" in lines[3] and lines[4].endswith("was sent SIGABRT!")
    assert len(lines) == 5  # info lines and stack frames are not telling
    assert log_highlights(GUNICORN_JAX_LOG, GUNICORN, keep=2) == lines[:2]


def test_highlights_strip_colour_and_find_the_wrapped_message():
    assert log_highlights(TORCH_LOG) == (
        "RuntimeError: Exception encountered when calling Sequential.call().",
        "Cannot re-initialize CUDA in forked subprocess. To use CUDA with multiprocessing, you must use the 'spawn' "
        "start method",
    )
    assert log_highlights("[INFO] Booting worker with pid: 7\nall good\n") == ()


def test_a_servers_own_word_is_telling_only_with_its_patterns():
    generic = log_highlights(GUNICORN_JAX_LOG)
    assert not any("WORKER TIMEOUT" in line for line in generic)  # gunicorn's word, not a generic one
    assert len(generic) == 4  # the deadlock warning, SIGKILL, the CUDA check, SIGABRT
    harakiri = "Tue Nov 26 09:03:43 2026 - *** HARAKIRI ON WORKER 1 (pid: 3627, try: 1, graceful: no) ***"
    assert log_highlights(harakiri) == () and log_highlights(harakiri, Uwsgi.telling_log_lines) == (harakiri,)
    assert log_highlights("[INFO] Booting worker with pid: 7\n", (r"Booting worker",)) == (
        "[INFO] Booting worker with pid: 7",)


def server_log(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.log"
    path.write_text(text)
    return path


def test_gunicorns_guess_is_not_out_of_memory_evidence():
    gunicorn = LogSeen(GUNICORN_JAX_LOG, oom_false_alarms=GunicornSync.oom_false_alarms)
    assert oom_evidence(gunicorn) is None
    real = "jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate 19.7G"
    assert oom_evidence(dataclasses.replace(gunicorn, text=GUNICORN_JAX_LOG + real + "\n")) == real


def test_uwsgis_allocator_giving_up_is_out_of_memory_evidence():
    line = "!!! tried memory allocation of 1099511627776 bytes !!!"
    assert oom_evidence(LogSeen(line)) is None
    assert oom_evidence(LogSeen(f"spawned uWSGI worker 1\n{line}\n", Uwsgi.oom_log_lines)) == line


class OwnServer(ServerAdapter):
    name = "own"
    telling_log_lines = (r"own: \w+ ready",)
    oom_log_lines = (r"own: arena exhausted",)


def test_a_cells_log_is_read_with_its_servers_patterns(tmp_path):
    path = server_log(tmp_path, "[INFO] own: master ready\nown: arena exhausted\n[INFO] Worker exiting\n")
    ok, ok_lines = server_log_evidence(Judgement(), path, OwnServer())
    assert ok == Judgement() and ok_lines == ("[INFO] own: master ready",)  # an OK cell keeps its telling lines
    failed, _ = server_log_evidence(Judgement(Verdict.CRASH, ("workers died",)), path, OwnServer())
    assert failed.verdict is Verdict.OOM and "own: arena exhausted" in failed.findings[0]
    assert server_log_evidence(Judgement(), None, OwnServer()) == (Judgement(), ())  # no log: nothing to say


def processes(*spec: tuple[str, int, float, float | None]) -> Memory:
    return Memory.of(
        ProcessMemory(role=role, pid=pid, rss_mb=100.0, uss_mb=80.0, pss_mb=90.0, cpu_s=cpu, gpu_mb=gpu_mb)
        for role, pid, cpu, gpu_mb in spec
    )


def test_hung_workers_finding_gives_each_workers_cpu_time():
    mem = processes(("master", 10, 12.54, 694.0), ("worker", 11, 0.013, 0.0), ("worker", 12, 0.0, 0.0))
    assert hung_workers_finding(mem) == (
        "CPU time of each worker from its fork to the hang: 0.01 s (pid 11), 0.00 s (pid 12)")
    assert "no worker process" in hung_workers_finding(processes(("master", 10, 1.0, None)))


def gpu_record(strategy, verdict, mem, policy="grow", card_mb=143771.0):
    return record(strategy, "gunicorn-sync", verdict, device="gpu", backend="jax", memory=mem,
                  settings={"gpu_policy": policy},
                  environment=dataclasses.replace(environment(), gpu_name="NVIDIA H200", gpu_memory_mb=card_mb))


def test_results_show_gpu_memory_per_process_and_the_cards_share():
    preload = gpu_record("preload", Verdict.HANG,
                         processes(("worker", 12, 0.0, 0.0), ("master", 10, 12.5, 694.0), ("worker", 11, 0.0, 0.0)))
    greedy = gpu_record("lazy", Verdict.OK,
                        processes(("master", 20, 0.2, 0.0), ("worker", 21, 23.0, 107988.0), ("worker", 22, 23.0,
                                                                                                34314.0)),
                        policy="off")
    text = render_markdown(gpu_memory_section([preload, greedy]))
    assert "| preload/gunicorn-sync/w2/mlp-small/gpu/jax/steady | HANG | grow | master 694 · worker 0 · worker 0 | " \
           "694 | 0.5% of 143,771 |" in text
    assert "| off | master 0 · worker 107,988 · worker 34,314 | 142,302 | 99% of 143,771 |" in text


def test_no_gpu_memory_section_for_cpu_cells_or_an_unknown_card():
    cpu = record("lazy", "gunicorn-sync", memory=processes(("master", 1, 0.1, None), ("worker", 2, 1.0, None)))
    assert gpu_memory_section([cpu]) == []
    unknown_card = gpu_record("lazy", Verdict.OK, processes(("worker", 2, 1.0, 888.0)), card_mb=0.0)
    assert "| 888 | - |" in render_markdown(gpu_memory_section([unknown_card]))


def test_a_record_says_when_its_code_differs_from_the_commit(monkeypatch):
    answers = {"rev-parse": "abc123\n", "status": " M matrix/cell.py\n"}
    monkeypatch.setattr(provenance, "_git", lambda *args: answers[args[0]])
    assert provenance.git_commit() == "abc123+modified"
    answers["status"] = ""
    assert provenance.git_commit() == "abc123"
    monkeypatch.setattr(provenance, "_git", lambda *args: None)
    assert provenance.git_commit() == "unknown"
