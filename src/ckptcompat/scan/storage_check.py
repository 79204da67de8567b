"""Storages as the pickles claim them, checked against the records that hold them.

A storage key's claims come from its persistent ids (type, dtype, element count,
location); :func:`check_storages` sets them next to the record sizes (zip records, or the
legacy format's size headers) and notes every disagreement. Standard library only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter, mul

from ckptcompat.scan.persistent_ids import StorageColumns
from ckptcompat.scan.scan_result import ScanAcc, StorageInfo, StorageTable
from ckptcompat.scan.torch_names import STORAGE_TYPES

__all__ = ["Claim", "check_storages", "claims", "storages_in_bulk"]

Claim = tuple[str | None, str | None, int, str | None]  # storage type, dtype, numel, location


def claims(acc: ScanAcc) -> dict[str, Claim]:
    """Storage key -> what its well-formed persistent ids claim; notes disagreeing claims."""
    out: dict[str, Claim] = {}
    odd: dict[str, None] = {}
    for ps in acc.scans:
        for ref in ps.persistent_ids:
            if not ref.well_formed:
                continue
            claim = (ref.storage_type, ref.dtype, ref.numel, ref.location)
            previous = out.setdefault(ref.key, claim)  # type: ignore[arg-type]
            if previous is not claim and previous[::2] != claim[::2]:
                odd[ref.key] = None  # type: ignore[index]
    if odd:
        acc.note("inconsistent_storage", "a storage key is claimed with two types or sizes", odd)
    return out  # type: ignore[return-value]


def check_storages(
    acc: ScanAcc, claims: Mapping[str, Claim], record_bytes: Mapping[str, int]
) -> tuple[StorageInfo, ...]:
    """Claimed storage sizes next to the record sizes (bytes); notes every mismatch."""
    infos, unknown, missing, mismatch = [], {}, {}, {}
    for key, (stype, dtype, numel, location) in claims.items():
        spec = STORAGE_TYPES.get(stype)  # type: ignore[arg-type]
        nbytes = numel * spec[1] if spec else None
        actual = record_bytes.get(key)
        if spec is None:
            unknown[stype] = None
        elif actual is None:
            missing[key] = None
        elif actual != nbytes:
            mismatch[key] = None
        infos.append(
            StorageInfo(
                key, stype, dtype or (spec[0] if spec else None), numel, nbytes, location, actual
            )
        )
    if unknown:
        acc.note("unknown_storage_type", "storage classes of unknown element size", unknown)
    if missing:
        acc.note("missing_storage_record", "storages the pickle names are not in the file", missing)
    if mismatch:
        acc.note(
            "storage_size_mismatch", "storage records disagree with the pickle's sizes", mismatch
        )
    return tuple(infos)


def _records_in_key_order(prefix: str, names: Sequence[str], keys: Sequence[str]) -> bool:
    """``names == [prefix + key for key in keys]``, by comparing two joined strings.

    The join is exact when no key holds the separator: the right side then has exactly
    ``len(keys) - 1`` separators, at the item boundaries, so equal strings of equally many
    items split into equal items.
    """
    if len(names) != len(keys):
        return False
    joined = "\0".join(keys)
    if joined.count("\0") != len(keys) - 1:  # a key holds the separator
        return False
    return "\0".join(names) == prefix + joined.replace("\0", "\0" + prefix)


def storages_in_bulk(
    acc: ScanAcc, prefix: str, names: Sequence[str], sizes: Sequence[int]
) -> StorageTable | None:
    """``check_storages(acc, claims(acc), record_bytes)`` for the usual file, in C-level maps
    over the columns of its thousands of ids, where ``record_bytes`` maps each storage
    record (``names``, all starting with ``prefix``; distinct) minus ``prefix`` to its size
    in ``sizes`` (bytes). The usual file: one pickle with persistent ids, all of them
    torch's zip ids (:class:`~ckptcompat.scan.persistent_ids.StorageColumns`), one
    per storage key, every storage type known and every record of the claimed size (so
    there is nothing to note). None when any of that fails; the caller then takes the
    general path.

    Records in the order of the ids (torch >= 2.5 writes them so) are matched by position,
    without a dict; other orders (torch 2.4 sorts keys as text) through one.
    """
    with_ids = [ps.persistent_ids for ps in acc.scans if len(ps.persistent_ids)]
    if len(with_ids) != 1:
        return None
    columns: StorageColumns | None = getattr(with_ids[0], "columns", None)
    if columns is None:
        return None
    keys, stypes = columns.keys, columns.storage_types
    specs = {stype: STORAGE_TYPES.get(stype) for stype in set(stypes)}
    if None in specs.values():
        return None
    size_of = {stype: spec[1] for stype, spec in specs.items()}  # type: ignore[index]
    nbytes = list(map(mul, columns.numels, map(size_of.__getitem__, stypes)))
    if _records_in_key_order(prefix, names, keys):
        actual: Sequence[int | None] = sizes  # distinct names, so distinct keys
    elif len(set(keys)) != len(keys):
        return None
    else:
        record_bytes = dict(
            zip(map(itemgetter(slice(len(prefix), None)), names), sizes, strict=True)
        )
        actual = list(map(record_bytes.get, keys))
    if list(actual) != nbytes:
        return None
    dtypes = columns.dtypes
    if not any(dtypes):
        dtype_of = {stype: spec[0] for stype, spec in specs.items()}  # type: ignore[index]
        dtypes = list(map(dtype_of.__getitem__, stypes))
    elif not all(dtypes):
        dtypes = [d or specs[t][0] for d, t in zip(dtypes, stypes, strict=True)]  # type: ignore[index]
    return StorageTable(keys, stypes, dtypes, columns.numels, nbytes, columns.locations, nbytes)
