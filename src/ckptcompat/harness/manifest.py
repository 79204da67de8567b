"""Checking a generated fixture folder against its MANIFEST.json (standard library only).

The regression corpus, the malicious corpus and the goldens each list their files with
``sha256`` and ``size_bytes``; :func:`folder_problems` is the one comparison they share.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["fixture_cli", "folder_problems", "sha256_file"]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def folder_problems(
    folder: Path,
    listed: Mapping[str, Mapping[str, Any]],
    *,
    manifest_name: str,
    expected: Iterable[str] = (),
) -> list[str]:
    """Every way ``folder`` differs from its manifest entries (empty when they agree).

    Args:
        folder: the fixture folder (flat: files directly inside it).
        listed: manifest entries by file name, each with ``sha256`` and ``size_bytes``.
        manifest_name: the manifest's own file name (not itself listed).
        expected: names the generator would write; any the manifest lacks is reported.
    """
    problems = []
    for name, entry in listed.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: listed in the manifest but missing")
            continue
        size = path.stat().st_size
        if size != entry["size_bytes"]:
            problems.append(f"{name}: {size} bytes, manifest says {entry['size_bytes']}")
        if sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 differs from the manifest")
    problems += [
        f"{p.name}: in the folder but not in the manifest"
        for p in sorted(folder.iterdir())
        if p.name != manifest_name and p.name not in listed
    ]
    problems += [
        f"{n}: an entry the manifest lacks (regenerate)" for n in expected if n not in listed
    ]
    return problems


def fixture_cli(
    argv: list[str] | None,
    *,
    prog: str,
    default_folder: Path,
    generate: Callable[[str], Path],
    check: Callable[[str], list[str]],
) -> int:
    """``python -m PROG [FOLDER] [--check]`` for a generated fixture folder.

    Generates (printing the manifest path) or, with ``--check``, prints every problem
    :func:`folder_problems`-style ``check`` finds and returns 1 when there is any.
    """
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("folder", nargs="?", default=str(default_folder))
    parser.add_argument("--check", action="store_true", help="only compare files with MANIFEST")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.folder)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    print(generate(args.folder))
    return 0
