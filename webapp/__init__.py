"""The common web app: a Flask app factory with a SQLAlchemy 2.x database.

Every strategy plugs into this same app, so the request path (validation, one
inference, one committed row per instance) is identical in every matrix cell.
"""

from __future__ import annotations

from flask import Flask

from forkwise.config import AppSettings
from forkwise.model.spec import ModelSpec
from forkwise.postgres import APP_NAME
from forkwise.strategies import registry
from forkwise.webapp.db import Database
from forkwise.webapp.process import AppProcess, install
from forkwise.webapp.routes import bp, register_error_handlers


def create_app(settings: AppSettings | None = None) -> Flask:
    """Build the app. Runs in the master when the strategy preloads, else in each worker."""
    settings = settings or AppSettings.from_environ()
    spec = ModelSpec.load(settings.model_spec)
    strategy = registry.get(settings.strategy)(settings, spec)

    app = Flask("forkwise")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    db = Database(settings.database_url, settings.db_busy_timeout_s, lock_dir=settings.run_dir,
                  reset=settings.db_reset, application_name=APP_NAME)
    db.init_app(app)
    state = AppProcess(settings, spec, strategy, db)
    app.extensions["forkwise"] = state
    app.register_blueprint(bp)
    register_error_handlers(app)
    install(state)

    if settings.preload_app:
        state.master_preload()  # we are the master; workers run post_fork via the server's hook
    else:
        db.create_schema()  # the launcher made it; a worker only finds it (under a lock)
        state.worker_started()  # we are already a worker
    return app
