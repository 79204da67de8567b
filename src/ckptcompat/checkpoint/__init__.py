"""Checkpoint formats, the manager and static inspection.

Submodules are imported on use: ``torch_compat`` imports :mod:`.scan` (standard library
only) during every load, so this package must not import torch-dependent modules eagerly.
"""
