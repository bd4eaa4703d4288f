"""uWSGI adapters, through pyuwsgi (a binary wheel: no compiler needed).

Processes, processes plus threads, or processes each running a gevent loop. A preloading strategy gets uWSGI's default
(app loaded in the master, then fork) and a post-fork hook; any other gets lazy-apps.
"""

from __future__ import annotations

from forkwise.servers.base import DEFAULT_GREENLETS, DEFAULT_THREADS, WSGI_APP, Deployment, LaunchPlan, ServerAdapter
from forkwise.strategies.base import ServerNeeds


class Uwsgi(ServerAdapter):
    kind = "uwsgi"
    name = "uwsgi"
    report_rank = 30
    summary = "uWSGI (pyuwsgi), one thread per process"
    # uWSGI's word on a worker: killed for the worker timeout (harakiri), dead ("DAMN ! worker 1
    # (pid: 7) died, killed by signal 9"), or no app to serve (need-app).
    telling_log_lines = (r"HARAKIRI ON WORKER", r"worker \d+ \(pid: \d+\) (?:died|MISTERIOUSLY killed)",
                         r"no app loaded")
    # uWSGI's own allocator giving up (uwsgi_malloc), before it exits.
    oom_log_lines = (r"tried memory allocation of \d+ bytes",)

    def plan(self, deployment: Deployment, needs: ServerNeeds) -> LaunchPlan:
        run_dir = deployment.settings.run_dir
        t = deployment.timeouts
        options = {
            "master": True,
            # One request per connection, as Gunicorn's sync workers do. With http11-socket's
            # keep-alive a worker (or thread) stays with one client while it keeps sending, and
            # every other connection waits: measured with 32 clients and 2 workers, the median
            # client got 1 answer in 2 s while two got thousands.
            "http-socket": f"{deployment.host}:{deployment.port}",
            # http-socket closes the connection after each answer: say so, as HTTP/1.1 wants, or
            # a client that keeps connections alive (wrk) takes each close for an error.
            "add-header": "Connection: close",
            "processes": deployment.workers,
            "module": WSGI_APP,
            "need-app": True,
            "die-on-term": True,  # SIGTERM stops (uWSGI's default is to reload)
            "enable-threads": True,  # let threads the app starts run
            "single-interpreter": True,
            "harakiri": t.worker_s,
            "worker-reload-mercy": t.graceful_s,
            "reload-mercy": t.graceful_s,
            "buffer-size": 32768,
            "disable-logging": True,  # no per-request log line: measure the app, not the logger
            "pidfile": str(run_dir / "server.pid"),
            # A graceful reload re-executes uWSGI; without this it runs the base interpreter
            # it finds through /proc/self/exe, outside the virtualenv, and cannot import forkwise.
            "binary-path": self.python(),
            # Imported in the master before fork: installs the post-fork and exit hooks.
            "import": "forkwise.servers.uwsgi_hooks",
        }
        if self.in_flight_option == "threads":
            options["threads"] = deployment.threads
        elif self.in_flight_option == "gevent":
            options["gevent"] = deployment.threads  # async cores: greenlets per process
            # Patched before the app (and forkwise) is imported, in the master too when it loads the
            # app: a module that took the blocking socket or threading first would keep them.
            options["gevent-early-monkey-patch"] = True
        if not needs.preload_app:
            options["lazy-apps"] = True
        if deployment.max_requests:
            options["max-requests"] = deployment.max_requests
            # Stagger recycling: worker i recycles after max + i * delta requests, so the
            # workers never all reload at once (every one of them loading the model).
            options["max-requests-delta"] = max(1, deployment.max_requests // (2 * deployment.workers))
        argv = [self.python(), "-m", "forkwise.servers.uwsgi_main"]
        for key, value in options.items():
            argv += [f"--{key}"] if value is True else [f"--{key}", str(value)]
        return LaunchPlan(argv=argv, env={}, files={})


class UwsgiThreads(Uwsgi):
    name = "uwsgi-threads"
    report_rank = 40
    summary = f"uWSGI (pyuwsgi), {DEFAULT_THREADS} threads per process unless in_flight says"
    threads = DEFAULT_THREADS
    in_flight_option = "threads"


class UwsgiGevent(Uwsgi):
    """uWSGI's gevent loop engine (built into pyuwsgi's wheel), the standard library monkey-patched
    before the app is loaded: a request waiting on I/O lets the process's other requests run."""

    name = "uwsgi-gevent"
    report_rank = 45
    summary = f"uWSGI (pyuwsgi), gevent loop ({DEFAULT_GREENLETS} greenlets per process unless in_flight says)"
    threads = DEFAULT_GREENLETS
    in_flight_option = "gevent"
