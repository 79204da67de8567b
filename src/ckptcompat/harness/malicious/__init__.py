"""The malicious corpus (``fixtures/malicious/``): crafted checkpoints every reader must refuse.

Regenerate with one command, inside the writer cell (``t26``, as :mod:`ckptcompat.harness.corpus`)::

    python -m ckptcompat.harness.malicious fixtures/malicious          # files + MANIFEST.json
    python -m ckptcompat.harness.malicious fixtures/malicious --check  # exit 1 on any drift

Each file is a few kB and written deterministically: zips with fixed dates, tars with
``mtime=0``, pickles crafted opcode by opcode. Most files are made with the standard library
alone and are byte-identical in every cell; the G1/G2/safe-v1-looking ones go through
``torch.save`` (``made_with="torch"`` in the manifest) and reproduce only under the writer's
torch.

**The one effect.** Every payload, if some unpickler ever ran it, does exactly one thing:
create (or touch) an empty *canary* file at ``$CKPTCOMPAT_CANARY``, or at
``<system temp dir>/ckptcompat-canary`` when that variable is unset -- the path is read when
the payload runs, so the bytes are the same everywhere. Payloads never do anything else.
Tests set the variable to a path in their temporary directory, run every reading path in a
subprocess, and check after each file that the canary is absent. Payloads only ever run
inside tests; this module only writes bytes, it never unpickles them.

The payloads are built in :mod:`.payloads`; :mod:`.files` holds the table of files and
writes (``python -m ckptcompat.harness.malicious``, via ``__main__``) and checks them.
"""
