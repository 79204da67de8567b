"""``ckptcompat doctor PATH...``: which explainer each path gets, and the exit code.

One path is explained in full by the explainer its kind needs: a Metta G3 ``.mpt`` or G4
bundle (:mod:`.generations`), a safetensors file, shard index or sharded directory
(:mod:`.safetensors`), a DCP directory (:mod:`.dcp`), any other file
(:func:`ckptcompat.doctor.main`). Several paths, or a directory, give one line per file
(:mod:`.batch`). Here rather than in the CLI, so that the fuzz run
(:mod:`ckptcompat.harness.fuzz.runner`, a layer below the CLI) runs the command's own
dispatch on its cases.

Exit codes, as the CLI documents them: 0 every path was read; 2 a path could not be read
(the typed error on stderr and, under ``--json``, as JSON on stdout).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ckptcompat.checkpoint.layout import is_dcp_dir
from ckptcompat.errors import CheckpointError

__all__ = ["run"]

_OK, _UNREADABLE = 0, 2


def _explain_one(
    path: str,
    as_json: bool,
    explain: Callable[[str], Any],
    to_json: Callable[[Any], dict[str, Any]],
    render: Callable[[Any], str],
) -> int:
    """Print the explanation of one G3/G4 file or DCP directory (text or JSON); an
    unreadable one exits 2 with the typed error on stderr and, under --json, as JSON on
    stdout, as for any other file (a DCP .metadata over the size limit raised a bare
    TypeError traceback, new-user trial 2026-12-06)."""
    from ckptcompat.doctor import error_json, write_escaped

    try:
        explanation = explain(path)
    except CheckpointError as exc:
        write_escaped(f"ckptcompat doctor: {type(exc).__name__}: {exc}\n", sys.stderr)
        if as_json:
            print(json.dumps(error_json(path, exc), indent=1))
        return _UNREADABLE
    text = json.dumps(to_json(explanation), indent=1) if as_json else render(explanation)
    # A hostile name (a lone surrogate) is escaped, not a UnicodeEncodeError traceback.
    write_escaped(text if text.endswith("\n") else text + "\n", sys.stdout)
    return _OK


def run(
    paths: Sequence[str],
    *,
    as_json: bool = False,
    verify_data: bool = False,
    python: str | None = None,
    numpy_major: int | None = None,
) -> int:
    """Explain ``paths`` on stdout; return the exit code (0 all read, 2 any unreadable).

    Args:
        paths: one or more files or directories (directories are searched recursively).
        as_json: JSON instead of text (one document for one file, one line per file else).
        verify_data: read every tensor record and check its CRC-32 (slower).
        python: another venv's interpreter whose packages the prediction uses.
        numpy_major: predict for a loading side with this numpy major only (1 or 2);
            default both (:mod:`.numpy_consumer`).
    """
    single = paths[0] if len(paths) == 1 else None
    if single is not None:
        from ckptcompat.generations.detect import generation_of

        if generation_of(single) is not None:  # Metta G3 .mpt or G4 bundle (issue 22)
            from ckptcompat.doctor import generations

            return _explain_one(
                single,
                as_json,
                generations.explain_generation,
                generations.to_json,
                generations.render,
            )
        from ckptcompat.doctor import safetensors

        if safetensors.is_safetensors(single):  # a .safetensors, an index, a sharded dir
            return _explain_one(
                single, as_json, safetensors.explain, safetensors.to_json, safetensors.render
            )
        if is_dcp_dir(single):  # a torch.distributed.checkpoint directory (issue 18)
            from ckptcompat.doctor import dcp

            return _explain_one(single, as_json, dcp.explain_dcp, dcp.to_json, dcp.render_dcp)
    if single is None or os.path.isdir(single):
        from ckptcompat.doctor import batch  # several paths or a tree: one line per file

        return batch.run(
            paths, as_json=as_json, read_data=verify_data, python=python, numpy_major=numpy_major
        )
    from ckptcompat import doctor

    flags = [*(["--json"] if as_json else []), *(["--verify-data"] if verify_data else [])]
    flags += ["--python", python] if python else []
    flags += ["--numpy", str(numpy_major)] if numpy_major else []
    return doctor.main([single, *flags])
