"""Tests for ckptcompat.scan.storage_check: the bulk storage check equals the general one."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import torch

from ckptcompat.scan import archive_scan
from ckptcompat.scan.scan import scan
from ckptcompat.scan.scan_result import StorageTable


def _rewritten(src: Path, dst: Path, *, as_text: bool = False, grow: str | None = None) -> Path:
    """``src``'s records in a new zip, data records in key order (as torch >= 2.5 writes
    them: the order of the ids) or, with ``as_text``, sorted as text (as torch 2.4 does),
    and record ``grow`` one byte longer."""
    with zipfile.ZipFile(src) as zin:
        records = {i.filename: zin.read(i) for i in zin.infolist()}
    names = list(records)
    data = [n for n in names if "/data/" in n]
    data.sort(key=None if as_text else lambda n: int(n.rsplit("/", 1)[1]))
    rest = [n for n in names if "/data/" not in n]
    names = rest[:1] + data + rest[1:]
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for name in names:
            zout.writestr(name, records[name] + (b"\0" if name == grow else b""))
    return dst


@pytest.mark.one_cell
@pytest.mark.parametrize("case", ["id_order", "text_order", "size_mismatch", "extra_record"])
def test_bulk_storage_check_equals_the_general_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """Guards the bulk storage check (columns of persistent ids, records matched by position
    when they come in id order, else through a dict) against the general per-key check it
    stands for: same storages, same findings, for records in id order (torch >= 2.5),
    sorted as text (torch 2.4), with a record of the wrong size and with a record no id
    names. Pure zip/pickle bytes: one cell suffices."""
    saved = tmp_path / "plain.pt"
    torch.save({f"w{i}": torch.zeros(i + 1) for i in range(12)}, saved)
    plain = _rewritten(saved, tmp_path / "copy.pt")
    path = {
        "id_order": plain,
        "text_order": _rewritten(plain, tmp_path / "sorted.pt", as_text=True),
        "size_mismatch": _rewritten(plain, tmp_path / "grown.pt", grow="plain/data/3"),
        "extra_record": tmp_path / "extra.pt",
    }[case]
    if case == "extra_record":
        _rewritten(plain, path)
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("plain/data/99", b"")
    fast = scan(path)
    monkeypatch.setattr(archive_scan, "storages_in_bulk", lambda *args: None)
    general = scan(path)
    assert fast == general
    assert fast.storage_bytes == general.storage_bytes == 4 * sum(range(1, 13))
    assert fast.dtypes == general.dtypes == {"float32"}
    bulk = case in ("id_order", "text_order", "extra_record")
    assert isinstance(fast.storages, StorageTable) is bulk
    assert ("storage_size_mismatch" in fast.codes()) is (case == "size_mismatch")
    assert ("unreferenced_record" in fast.codes()) is (case == "extra_record")
