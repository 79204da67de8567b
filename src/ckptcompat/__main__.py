"""``python -m ckptcompat``: the same command line as the ``ckptcompat`` script (cli.main)."""

from __future__ import annotations

import sys

from ckptcompat.cli import main

if __name__ == "__main__":
    sys.exit(main())
