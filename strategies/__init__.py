"""Ways to load the model under a pre-fork server: one small module each, one lifecycle.

See ``base.Strategy`` for the hooks and which process runs each; ``registry`` finds
strategies by name, built-in or registered by a team through an entry point.
"""

from forkwise.strategies.base import ServerNeeds, Strategy
from forkwise.strategies.registry import get, names

__all__ = ["ServerNeeds", "Strategy", "get", "names"]
