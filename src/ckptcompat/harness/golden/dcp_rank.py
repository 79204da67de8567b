"""One process of a DCP golden run: ``python -m ckptcompat.harness.golden.dcp_rank OUT RUN``.

Started alone (world size 1) or by ``torchrun --nproc-per-node 2`` (world size 2) from
:mod:`ckptcompat.harness.golden.dcp`: trains :data:`~ckptcompat.harness.golden.dcp.AGENT`
for :data:`~ckptcompat.harness.golden.dcp.EPOCHS` epoch with ``--checkpoint-format dcp`` into
``OUT/RUN/`` (rank 0's safe files and index, every rank's DCP files). Arguments are
positional: torchrun's own parser would take an option after the module name for an
abbreviation of one of its own.

Exit status: 0 trained, 2 bad usage.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Train one DCP golden run in this process (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m ckptcompat.harness.golden.dcp_rank OUT RUN", file=sys.stderr)
        return 2
    from ckptcompat import numerics

    numerics.apply()
    from ckptcompat.harness.golden.dcp import EPOCHS, trainer_config
    from ckptcompat.rl import distributed
    from ckptcompat.rl.trainer import Trainer

    out, run = args
    with distributed.session() as ctx:
        trainer = Trainer.start(
            trainer_config(), run, out, dist=ctx, checkpoint_format="dcp", progress=False
        )
        trainer.train(EPOCHS)
    if ctx.distributed:  # the run's files are complete (train() ends with a barrier)
        distributed.exit_without_teardown(0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
