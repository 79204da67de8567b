"""Coverage-guided fuzzing of the static scanner with atheris (``nox -s fuzz_coverage``).

The scanner is standard library only, so this runs without torch: atheris mutates bytes
towards new branches of :mod:`ckptcompat.scan`, and each input goes through the scan of a
file object, ``precheck(full=True)``, the pickle scan and the nesting check. Anything but
a returned result or a ckptcompat error is a finding: atheris stops and writes the input
as ``crash-<sha1>`` (a C-stack overflow kills the process the same way). Seeds: the
crafted reproducers and the files of ``fixtures/corpus``.

``python -m ckptcompat.harness.fuzz.coverage [atheris/libFuzzer flags] [CORPUS_DIR]``
(atheris < 3.1 is the last with CPython 3.11 wheels).
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

__all__ = ["main", "one_input", "seed_corpus"]


def one_input(data: bytes) -> None:
    """Run one input through the scanner's entry points; raise on anything untyped."""
    from ckptcompat.errors import CheckpointError
    from ckptcompat.scan import scan
    from ckptcompat.scan.nesting import too_deep
    from ckptcompat.scan.pickle_scan import scan_pickle

    scan.scan(io.BytesIO(data))
    with contextlib.suppress(CheckpointError):
        scan.precheck(io.BytesIO(data), full=True)
    scan_pickle(data)
    too_deep(data)


def seed_corpus(out: Path) -> int:
    """Write the seed inputs into ``out``; return how many."""
    from ckptcompat.harness.fuzz import crafted
    from ckptcompat.locator import CORPUS_DIR

    out.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, build in crafted.BUILDERS.items():
        data = build()
        if len(data) <= 1 << 20:
            (out / f"crafted-{name}").write_bytes(data)
            count += 1
    for path in sorted(CORPUS_DIR.glob("*.pt")):
        (out / f"corpus-{path.name}").write_bytes(path.read_bytes())
        count += 1
    return count


def main(argv: list[str] | None = None) -> None:
    """Seed the corpus directory (the last argument not starting with ``-``) and fuzz."""
    import atheris

    args = list(sys.argv if argv is None else argv)
    dirs = [a for a in args[1:] if not a.startswith("-")]
    if dirs:
        seed_corpus(Path(dirs[-1]))
    with atheris.instrument_imports(include=["ckptcompat.scan"]):
        import ckptcompat.scan.scan  # noqa: F401
    atheris.Setup(args, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
