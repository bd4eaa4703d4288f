"""The model-server process used by the child-process strategies.

One per deployment: ``supervisor`` (started by the web server's master, never imports
the ML runtime) runs ``server`` in a fresh interpreter and restarts it if it dies.
Workers talk to it through ``client`` over a Unix socket in a private directory,
with float32 bytes on the wire (``protocol``). What the server did is in ``stats``.
"""
