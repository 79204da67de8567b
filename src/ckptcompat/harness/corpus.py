"""The regression corpus: small odd and bad checkpoint files under ``fixtures/corpus/``.

Regenerate with one command, inside the writer cell (``t26``, torch 2.6.0: the oldest
default torch that can save uint16 tensors)::

    python -m ckptcompat.harness.corpus            # writes fixtures/corpus/ + MANIFEST.json
    python -m ckptcompat.harness.corpus --check    # exit 1 if files and MANIFEST disagree

Every file is a few kB, written deterministically (seeded, ``SOURCE_DATE_EPOCH`` fixed,
torch's zip writer is byte-stable, the reproducible-numerics mode: the CLI re-executes itself
in it), and described in ``MANIFEST.json`` with its sha256,
size and the torch/numpy/python that wrote it. What each file is lives in
:mod:`.corpus_files`. The whole-object pickles reference only our own classes, the standard
library and numpy: nothing here is malicious, so the harness may ``naive_load`` every file
(in a subprocess).

Importing this module is cheap (standard library only); :func:`generate` imports torch.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from ckptcompat import locator, numerics
from ckptcompat.harness.corpus_files import CORPUS
from ckptcompat.harness.fixtures.manifest import fixture_cli, folder_problems, sha256_file

__all__ = [
    "CORPUS",
    "CORPUS_DIR",
    "MANIFEST_NAME",
    "SOURCE_DATE_EPOCH",
    "check",
    "generate",
    "main",
    "read_manifest",
]

#: The committed corpus of a source checkout.
CORPUS_DIR: Path = locator.CORPUS_DIR
MANIFEST_NAME = "MANIFEST.json"
#: 2025-01-01T00:00:00Z, the ``created_at`` of the safe-format file (seconds).
SOURCE_DATE_EPOCH = "1735689600"
_MANIFEST_SCHEMA = 1


# --------------------------------------------------------------------------- manifest
def _writer() -> dict[str, str]:
    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "absent"

    return {
        "torch": version("torch"),
        "numpy": version("numpy"),
        "python": platform.python_version(),
        "ckptcompat": version("ckptcompat"),
    }


def _freeze() -> list[str]:
    """``name==version`` of every installed distribution (what ``uv pip freeze`` lists)."""
    names = {(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}
    return sorted(f"{n}=={v}" for n, v in names.items() if n)


def read_manifest(folder: str | os.PathLike[str] = CORPUS_DIR) -> dict[str, Any]:
    """The parsed ``MANIFEST.json`` of ``folder``.

    Raises:
        FileNotFoundError: no manifest there.
        ValueError: not valid JSON.
    """
    return json.loads((Path(folder) / MANIFEST_NAME).read_text())


def generate(folder: str | os.PathLike[str] = CORPUS_DIR) -> Path:
    """Write every corpus file and ``MANIFEST.json`` into ``folder``; return the manifest path.

    Files listed by an older manifest there are removed first; nothing else is touched.
    Sets ``SOURCE_DATE_EPOCH`` (when unset) so that the safe-format file is reproducible.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
    manifest_path = folder / MANIFEST_NAME
    if manifest_path.exists():
        for entry in read_manifest(folder).get("files", []):
            (folder / entry["name"]).unlink(missing_ok=True)
    writer = _writer()
    files = []
    import torch

    numerics.apply()
    threads = torch.get_num_threads()
    # One thread, as the goldens: some kernels (the QR behind orthogonal init) give other
    # bits with more threads, and a test process may run with any count.
    torch.set_num_threads(1)
    try:
        for item in CORPUS:
            item.write(folder / item.name)
    finally:
        torch.set_num_threads(threads)
    for item in CORPUS:
        path = folder / item.name
        files.append(
            {
                "name": item.name,
                "sha256": sha256_file(path),
                "size_bytes": path.stat().st_size,
                "description": item.description,
                "deterministic": item.deterministic,
                "numerics_dependent": item.numerics,
                "writer": writer,
            }
        )
    manifest = {
        "schema_version": _MANIFEST_SCHEMA,
        "generated_by": "python -m ckptcompat.harness.corpus",
        "source_date_epoch": int(os.environ["SOURCE_DATE_EPOCH"]),
        "numerics": numerics.fingerprint(),
        "files": files,
        "environment": _freeze(),
    }
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest_path


def check(folder: str | os.PathLike[str] = CORPUS_DIR) -> list[str]:
    """Differences between ``folder``'s files and its manifest (empty when they agree).

    Reports missing files, sha256 or size mismatches, files not in the manifest, and
    corpus entries (:data:`CORPUS`) the manifest lacks.
    """
    folder = Path(folder)
    try:
        manifest = read_manifest(folder)
    except (FileNotFoundError, ValueError) as exc:
        return [f"no readable {MANIFEST_NAME} in {folder}: {exc}"]
    listed = {entry["name"]: entry for entry in manifest.get("files", [])}
    return folder_problems(
        folder, listed, manifest_name=MANIFEST_NAME, expected=[item.name for item in CORPUS]
    )


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m ckptcompat.harness.corpus [FOLDER] [--check]``.

    Started outside the reproducible-numerics mode (and with no ``argv`` of its own), it
    re-executes itself in the mode: the ``numerics`` files' bytes depend on the kernel path.
    """
    if argv is None and not numerics.requested():
        os.execve(
            sys.executable,
            [sys.executable, "-m", "ckptcompat.harness.corpus", *sys.argv[1:]],
            numerics.reproducible_env(),
        )
    return fixture_cli(
        argv,
        prog="python -m ckptcompat.harness.corpus",
        default_folder=CORPUS_DIR,
        generate=generate,
        check=check,
    )


if __name__ == "__main__":
    raise SystemExit(main())
