"""``python -m forkwise.servers.uwsgi_main [uWSGI options]``: run pyuwsgi in this process.

This process becomes the uWSGI master, so the deployment's process group is exact.
"""

import sys

import pyuwsgi

if __name__ == "__main__":
    sys.exit(pyuwsgi.run())
