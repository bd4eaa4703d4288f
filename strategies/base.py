"""The one interface every strategy implements.

A strategy decides which process imports the ML runtime and loads the model, and
when. The web app calls every hook below in the same order under every server; the
defaults do nothing, so a strategy overrides only the hooks it needs. Each hook's
docstring names the process that runs it.

Lifecycle, preloaded (``needs.preload_app``)::

    master:  __init__ -> preload()                       -> ... -> on_exit()
    worker:                (fork) -> post_fork() -> predict() x N

Lifecycle, not preloaded::

    worker:  (fork) -> __init__ -> post_fork() -> predict() x N
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from forkwise.config import AppSettings
from forkwise.model.spec import ModelSpec


@dataclass(frozen=True)
class ServerNeeds:
    """What a strategy asks of the server; adapters translate it into configuration."""

    # Build the web app in the master before forking workers (gunicorn --preload,
    # uWSGI without lazy-apps). False: each worker builds it after fork (lazy-apps).
    preload_app: bool = False


class Strategy:
    """Base class: do-nothing hooks, so the caller can always call every one."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs: ClassVar[ServerNeeds] = ServerNeeds()
    # Answer one inference right after post_fork, so the worker is ready before traffic.
    warm_after_fork: ClassVar[bool] = True
    # Move every object the master created into the GC's permanent generation before
    # fork (gc.freeze), so collections in workers do not touch, and copy, shared pages.
    freeze_gc_before_fork: ClassVar[bool] = False
    # True when the deployment runs a separate model-server process (reliability scenarios).
    has_model_server: ClassVar[bool] = False
    # False for a strategy that answers without the model (the `control` ceiling):
    # verification then checks `constant_output` instead of the reference set.
    serves_model: ClassVar[bool] = True
    # Where reports list the strategy (lower first; equal ranks by name): the built-ins from
    # loading in the request, through loading before and after fork, to the model-less ceiling.
    report_rank: ClassVar[int] = 1000
    # The article's case (forkwise.matrix.analysis.article) whose claim this strategy's cells test, and the
    # case it is shown beside for comparison; None: neither.
    article_case: ClassVar[int | None] = None
    compared_in_case: ClassVar[int | None] = None

    def __init__(self, settings: AppSettings, spec: ModelSpec):
        """Runs in the process that builds the web app: the master when preloaded, else each worker."""
        self.settings = settings
        self.spec = spec

    def preload(self) -> None:
        """Runs in the master, once, before any worker is forked (only when needs.preload_app)."""

    def post_fork(self) -> None:
        """Runs in each worker, once, before it serves its first request."""

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Runs in a worker, on the request's thread: float32 rows in, float32 rows out.

        Raise ModelUnavailable when the model cannot answer now (the client gets 503).
        """
        raise NotImplementedError

    @classmethod
    def knobs(cls, settings: AppSettings) -> dict[str, object]:
        """The strategy's settings in force, for /stats and the record (JSON-ready)."""
        return {}

    @classmethod
    def model_server_dir(cls, settings: AppSettings) -> Path | None:
        """The directory of the deployment's model server: its socket and its stats files
        (forkwise.modelserver.stats); None when it has no model server."""
        return None

    def on_exit(self) -> None:
        """Runs in the master at shutdown (when preloaded), and in a worker as it exits."""

    def constant_output(self) -> np.ndarray | None:
        """The answer every request gets when serves_model is False; None otherwise."""
        return None
