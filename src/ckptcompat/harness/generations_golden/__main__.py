"""``python -m ckptcompat.harness.generations_golden OUT_DIR CELL``."""

from ckptcompat.harness.generations_golden.produce import main

raise SystemExit(main())
