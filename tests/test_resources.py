"""Which child of a server master is a worker: a forked copy of it, not a program it ran."""

from __future__ import annotations

import multiprocessing
import os
import subprocess

import psutil

from forkwise.matrix.run.resources import role_of


def test_a_program_the_master_runs_is_a_helper_not_a_worker():
    helper = subprocess.Popen(["sleep", "5"])
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    forked = context.Process(target=stop.wait, args=(5,))
    forked.start()
    try:
        assert role_of(psutil.Process(helper.pid), os.getpid()) == "helper"
        assert role_of(psutil.Process(forked.pid), os.getpid()) == "worker"
        assert role_of(psutil.Process(os.getpid()), os.getpid()) == "master"
    finally:
        helper.kill()
        helper.wait()
        stop.set()
        forked.join(5)
