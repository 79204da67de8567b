"""Goldens: checkpoints each torch cell writes once and every cell checks.

``python -m ckptcompat.harness.golden OUT_DIR CELL`` writes a cell's goldens
(:mod:`.generate`, files by :mod:`.produce`); :mod:`.read` and :mod:`.verify` check them,
:mod:`.records` records each check, :mod:`.phase` runs the checks in a matrix phase and
:mod:`.team` checks a team's goldens and checkpoints.
"""
