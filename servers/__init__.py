"""Server adapters by name. Each translates a strategy's needs into a real server's configuration.

``registry`` finds them by name, built-in or registered by a team through the ``forkwise.servers``
entry-point group.
"""

from forkwise.servers.base import Deployment, LaunchPlan, ServerAdapter, ServerTimeouts
from forkwise.servers.registry import get, names

__all__ = ["Deployment", "LaunchPlan", "ServerAdapter", "ServerTimeouts", "get", "names"]
