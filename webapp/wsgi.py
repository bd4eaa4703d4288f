"""The WSGI entry point the servers load: ``forkwise.webapp.wsgi:app``."""

from forkwise.webapp import create_app

app = create_app()
