"""Gunicorn adapters: sync workers, gthread workers (threads per worker) and gevent workers
(greenlets per worker, with the standard library monkey-patched).

Writes a gunicorn.conf.py with the settings and the server hooks. The hooks only
forward to forkwise.webapp.process, which calls the strategy's hooks.
"""

from __future__ import annotations

from forkwise.servers.base import DEFAULT_GREENLETS, DEFAULT_THREADS, WSGI_APP, Deployment, LaunchPlan, ServerAdapter
from forkwise.strategies.base import ServerNeeds

_SETTINGS = '''\
# Written by forkwise for one deployment. Hooks forward to forkwise.webapp.process.
bind = {bind!r}
workers = {workers}
worker_class = {worker_class!r}
threads = {threads}
worker_connections = {worker_connections}  # gevent: greenlets (requests in flight) per worker
preload_app = {preload}
timeout = {timeout}
graceful_timeout = {graceful}
max_requests = {max_requests}
max_requests_jitter = {max_requests_jitter}  # stagger recycling: workers never all reload at once
accesslog = None
errorlog = "-"
loglevel = "info"
pidfile = {pidfile!r}
control_socket_disable = True  # gunicorn 27+: no shared ~/.gunicorn socket between deployments
'''

# Server hooks: a subclass may add its own (gunicorn calls any hook its config file defines).
HOOKS = '''

def post_worker_init(worker):
    """Worker process, after gunicorn's worker init, before its first request."""
    from forkwise.webapp import process
    process.worker_started()


def worker_exit(server, worker):
    """Worker process, as it exits."""
    from forkwise.webapp import process
    process.worker_exit()


def on_exit(server):
    """Master process, at shutdown."""
    from forkwise.webapp import process
    process.master_exit()
'''


class Gunicorn(ServerAdapter):
    kind = "gunicorn"
    worker_class = "sync"
    hooks = HOOKS  # the Python source of the config file's server hooks
    # gunicorn's word on a worker: killed for the worker timeout, or unable to boot the app.
    telling_log_lines = (r"WORKER TIMEOUT", r"Worker failed to boot", r"App failed to load")
    # gunicorn's guess on any SIGKILLed worker, its own WORKER TIMEOUT kills included: not evidence.
    oom_false_alarms = (r"Perhaps out of memory\?",)

    def plan(self, deployment: Deployment, needs: ServerNeeds) -> LaunchPlan:
        run_dir = deployment.settings.run_dir
        config_path = run_dir / "gunicorn.conf.py"
        config = _SETTINGS.format(
            bind=f"{deployment.host}:{deployment.port}",
            workers=deployment.workers,
            worker_class=self.worker_class,
            threads=deployment.threads if self.in_flight_option == "threads" else 1,
            # Read by gevent workers only; any other keeps gunicorn's default.
            worker_connections=deployment.threads if self.in_flight_option == "worker_connections" else 1000,
            preload=needs.preload_app,
            timeout=deployment.timeouts.worker_s,
            graceful=deployment.timeouts.graceful_s,
            max_requests=deployment.max_requests,
            max_requests_jitter=deployment.max_requests // 2,
            pidfile=str(run_dir / "server.pid"),
        )
        config += self.hooks
        argv = [self.python(), "-m", "gunicorn", "--config", str(config_path), WSGI_APP]
        return LaunchPlan(argv=argv, env={}, files={config_path: config})


class GunicornSync(Gunicorn):
    name = "gunicorn-sync"
    report_rank = 10
    summary = "Gunicorn, sync workers (one request at a time per worker)"


class GunicornGthread(Gunicorn):
    name = "gunicorn-gthread"
    report_rank = 20
    summary = f"Gunicorn, gthread workers ({DEFAULT_THREADS} threads per worker unless in_flight says)"
    worker_class = "gthread"
    threads = DEFAULT_THREADS
    in_flight_option = "threads"


class GunicornGevent(Gunicorn):
    """gevent workers: gunicorn monkey-patches the standard library (socket, threading, time) in each
    worker before it loads the app, so a request waiting on I/O (the model server's socket, the
    database) lets the worker's other requests run; CPU work (an in-process model call) does not."""

    name = "gunicorn-gevent"
    report_rank = 25
    summary = f"Gunicorn, gevent workers ({DEFAULT_GREENLETS} greenlets per worker unless in_flight says)"
    worker_class = "gevent"
    threads = DEFAULT_GREENLETS
    in_flight_option = "worker_connections"
