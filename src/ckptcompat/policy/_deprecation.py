"""One DeprecationWarning per call, pointing at the caller's line and naming the replacement."""

from __future__ import annotations

import warnings

__all__ = ["warn_deprecated"]


def warn_deprecated(old: str, replacement: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``replacement``.

    ``stacklevel=3`` points at the caller of the public function that calls this helper
    (this helper is frame 1, the public function frame 2). Constructors reached through a
    classmethod pass a larger value.
    """
    warnings.warn(
        f"{old} is deprecated and will be removed; use {replacement} instead",
        DeprecationWarning,
        stacklevel=stacklevel,
    )
