"""``python -m ckptcompat.harness.golden OUT_DIR CELL``: see :mod:`.generate`."""

from ckptcompat.harness.golden.generate import main

raise SystemExit(main())
