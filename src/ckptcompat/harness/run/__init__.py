"""Running the cells: the plan of the cross-version scenarios (:mod:`.scenarios`), the
matrix driver over the cells' interpreters (:mod:`.driver`), one phase in one cell
(:mod:`.phases`) running its steps (:mod:`.steps`), and real loads next to the doctor's
prediction (:mod:`.repro`).
"""
