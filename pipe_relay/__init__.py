# pipe-relay: a streaming pipe relay server (curl -T on one side, curl on the other, nothing stored).
# Invariant: this module only re-exports the public names.
from ._version import __version__
from .config import Config
from .net import serve

__all__ = ["Config", "__version__", "serve"]
