"""Metta's later checkpoint generations, read without running code (issue 22).

* G3, ``.mpt`` (Metta from October 2025): a zip holding ``weights.safetensors`` and
  ``modelarchitecture.txt``, a Python-call string such as
  ``pkg.Arch(action_probs_config={...}, components=[...])``.
* G4, a checkpoint bundle (Metta from January 2026): a directory or a zip holding
  ``weights.safetensors``, ``policy_spec.json`` (``class_path``, ``data_path``,
  ``init_kwargs`` holding the architecture string) and optionally ``trainer_state.pt``.
* Files other libraries write (issue 16): Lightning ``.ckpt``, stable-baselines3 ``.zip``,
  Hugging Face ``pytorch_model.bin`` (:mod:`.families`, :mod:`.family_migrate`), read with
  inert stand-ins for the classes they name (:mod:`.stand_ins`).

Layer 4.5 (docs/design.md section 3): above ``checkpoint`` (``migrate`` writes the safe format
through its public functions), below the doctor. :mod:`.safetensors_header`,
:mod:`.architecture` and :mod:`.detect` are standard library only, so the doctor reads them
without torch (and :mod:`.family_values`); :mod:`.tensors`, the migrations, the family
readers, :mod:`.stand_ins` and :mod:`.batch` import torch.
This ``__init__`` imports nothing, so importing a submodule does not pull torch in.
"""
