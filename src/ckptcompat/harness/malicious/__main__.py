"""``python -m ckptcompat.harness.malicious [FOLDER] [--check]``."""

from ckptcompat.harness.malicious.files import main

raise SystemExit(main())
