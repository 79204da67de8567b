"""Goldens of Metta's later generations: G3 ``.mpt`` and G4 bundles (issue 22, item 4).

:mod:`.metta_format` writes the files the way Metta's own writers do; :mod:`.produce` makes
one producer cell's goldens (``python -m ckptcompat.harness.generations_golden OUT_DIR
CELL``, into ``fixtures/golden/metta/<cell>/``); :mod:`.check` reads and migrates every
producer's files in a consumer cell (the ``golden`` tests and the matrix's evaluate phase).
Outside the golden producer code digest (``harness/golden/*.py``): changing this package
does not ask the generation-2 goldens to be confirmed again. This ``__init__`` imports
nothing.
"""
