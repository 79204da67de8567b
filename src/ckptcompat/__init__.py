"""ckptcompat: do our agents' checkpoints still save, load, resume and evaluate on every torch?

Importing the package is cheap: it imports neither torch nor numpy. Submodules do.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
