"""forkwise: settle how to serve a TensorFlow model under a pre-fork server, with evidence.

The package root holds the pieces every part shares (settings, errors, process
ownership, the CLI); each concern has its own subpackage:

- ``forkwise.webapp``      the common Flask + SQLAlchemy app (app factory, db, validation)
- ``forkwise.strategies``  one module per way of loading the model, one lifecycle
- ``forkwise.servers``     adapters that turn a strategy's needs into Gunicorn/uWSGI config
- ``forkwise.model``       the default model, the reference set, the compiled inference call
- ``forkwise.modelserver`` the out-of-process model server used by ``child-process``
- ``forkwise.matrix``      cells, load, records and the published reports
"""

__version__ = "0.1.0"
