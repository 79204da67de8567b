"""Static inspection of checkpoint files: never unpickles, never imports what a file names.

Standard library only (no torch, no numpy): the doctor runs it on machines without them,
and :mod:`ckptcompat.torch_compat` calls :func:`ckptcompat.scan.scan.precheck` before every
safe load. It imports nothing of ckptcompat but :mod:`ckptcompat.errors` (and, for
torch-version facts, :mod:`ckptcompat.versions_facts`).

Modules, from the bytes up: :mod:`.archive_reader` (zip directory and records),
:mod:`.sniff` (container kind), :mod:`.opcode_walk` (the opcode tokenizer),
:mod:`.inert_placeholders`, :mod:`.persistent_ids` and :mod:`.inert_unpickler` (the object
graph without running code), :mod:`.pickle_scan` (one pickle), :mod:`.storage_check` and
:mod:`.archive_scan` (one container), :mod:`.scan_result` (results), :mod:`.scan`
(``scan`` and ``precheck``); :mod:`.torch_names` (torch's names) and :mod:`.allowlist`
(the curated allowlist) beside them.
"""
