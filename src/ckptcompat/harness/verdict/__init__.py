"""Verdicts: typed result records (:mod:`.records`), merged per cell into the matrix
(:mod:`.matrix`) and set against the baseline, drawn (:mod:`.heatmap`) and reported
(:mod:`.report`), gated (:mod:`.gate`); test-run summaries (:mod:`.junit`) and CI job
matrices (:mod:`.ci`).
"""
