"""One torchrun child of ``ckptcompat run ... --nproc N``: the command line from one JSON argument.

:mod:`ckptcompat.cli_launch` starts ``python -m torch.distributed.run ... -m
ckptcompat.cli_rank '["run", "train", "--run", ...]'``: torchrun's parser would refuse a
bare ``--run`` after the script's name as an ambiguous abbreviation of its ``--run-path``,
so the command line travels as one JSON list and this module hands it to ``cli.main``.
"""

from __future__ import annotations

import json
import sys

from ckptcompat.cli import main

__all__ = ["child_main"]


def child_main(argv: list[str] | None = None) -> int:
    """``cli.main`` on the JSON list in ``argv[0]`` (default ``sys.argv[1]``); its exit code.

    Raises:
        SystemExit: 2 when the argument is not a JSON list of strings (a usage error).
    """
    raw = (sys.argv[1:] if argv is None else argv)[:1]
    try:
        args = json.loads(raw[0]) if raw else None
    except json.JSONDecodeError:
        args = None
    if type(args) is not list or not all(type(a) is str for a in args):
        print("ckptcompat.cli_rank: expected one JSON list of arguments", file=sys.stderr)
        raise SystemExit(2)
    return main(args)


if __name__ == "__main__":
    sys.exit(child_main())
