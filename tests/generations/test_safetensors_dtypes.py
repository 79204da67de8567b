"""Tests of ckptcompat.generations.safetensors_dtypes: the dtype table against torch.

Runs in every cell: which torch dtypes exist is the torch version's fact.
"""

from __future__ import annotations

import torch

from ckptcompat import versions_facts
from ckptcompat.generations.safetensors_dtypes import DTYPES

MINOR = ".".join(torch.__version__.split(".")[:2])


def test_each_torch_name_exists_exactly_where_the_facts_say() -> None:
    """Guards the two tables the predictions join: a dtype's torch name must exist in this
    torch iff versions_facts' dtypes rows say so (a typo, or a wrong first minor such as
    float8_e8m0fnu before 2.7, would mispredict every file of that dtype)."""
    known = versions_facts.names_through("dtypes", MINOR)
    for dtype in DTYPES.values():
        if not dtype.torch_name:  # F6_*: no torch dtype in any release
            assert dtype.safetensors_since is None, dtype
            continue
        exists = isinstance(getattr(torch, dtype.torch_name, None), torch.dtype)
        assert exists == (dtype.torch_name in known), dtype.name


def test_byte_sized_dtypes_match_torch_element_sizes() -> None:
    """Guards the size rule the header reader checks offsets with: bits per element equal
    torch's itemsize for every byte-sized dtype this torch has."""
    for dtype in DTYPES.values():
        built = getattr(torch, dtype.torch_name, None) if dtype.torch_name else None
        if isinstance(built, torch.dtype) and dtype.bits >= 8:
            assert torch.empty(0, dtype=built).element_size() * 8 == dtype.bits, dtype.name
