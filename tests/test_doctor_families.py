"""Regression tests of ckptcompat.doctor.families: other libraries' files, by structure.

Issue 16 item 4: a stable-baselines3 ``.zip`` was called corrupt, Lightning ``.ckpt`` and
Hugging Face Trainer files were only "a dict". The libraries are not installed: each file
is built by :mod:`tests.generations.family_builders` with the layout their save code
writes, the libraries' own classes being stand-ins pickled under their module names. The
printed fixes are applied through :mod:`ckptcompat.torch_compat`.
"""

from __future__ import annotations

import base64
import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ckptcompat import doctor, torch_compat
from ckptcompat.harness.fixtures.numpy_random import safe_globals_for
from tests.generations.family_builders import hf_checkpoint as hf_checkpoint_folder
from tests.generations.family_builders import lightning_ckpt, sb3_zip, trained, tsave


def test_sb3_archive_is_recognised_and_its_fix_loads(tmp_path: Path) -> None:
    """Guards an SB3 .zip being called corrupt: the doctor names the archive, the
    cloudpickle entry of 'data' that blocks (naming the class it pickles), and the fix
    (policy.pth from the zip, weights-only) really loads the state_dict."""
    path = sb3_zip(tmp_path / "ppo_cartpole.zip")
    diag = doctor.diagnose(path)
    fam = diag.family
    assert fam is not None and fam.library == "stable-baselines3"
    assert "sb3 2.3.2" in fam.what and "policy.pth" in fam.what
    assert len(fam.blockers) == 1 and "policy_class" in fam.blockers[0]
    assert "stable_baselines3.common.policies.ActorCriticPolicy" in fam.blockers[0]
    assert "z.open('policy.pth')" in fam.fix and "custom_objects" in fam.fix
    assert doctor.verdict_line(diag).startswith("a stable-baselines3 model archive")
    assert "library      stable-baselines3" in doctor.render_text(diag)
    assert doctor.to_json(diag)["family"]["library"] == "stable-baselines3"
    with zipfile.ZipFile(path) as z:  # the printed fix, torch.load through torch_compat
        state = torch_compat.load(z.open("policy.pth"))
    assert set(state) == {"weight", "bias"}


def test_lightning_ckpt_names_the_blocking_part_and_the_allowlist_loads(tmp_path: Path) -> None:
    """Guards a Lightning .ckpt being only 'a dict': the doctor names it, says that
    hyper_parameters (argparse.Namespace) blocks weights_only, and its allowlist loads it."""
    path = lightning_ckpt(tmp_path / "epoch=3-step=120.ckpt")
    diag = doctor.diagnose(path)
    fam = diag.family
    assert fam is not None and fam.library == "Lightning" and "lightning 2.4.0" in fam.what
    assert "optimizer_states" in fam.what and "hyper_parameters" in fam.what
    assert fam.blockers == (
        "hyper_parameters: argparse.Namespace (refused by weights_only unless allowlisted)",
    )
    assert "save_hyperparameters" in fam.fix
    wo = diag.for_torch(str(torch.__version__)).weights_only
    assert wo.outcome == "fixable_by_allowlist"
    loaded = torch_compat.load(path, safe_globals=safe_globals_for(wo.allowlist))
    assert loaded["hyper_parameters"]["args"].lr == 0.001


@pytest.fixture
def hf_checkpoint(tmp_path: Path) -> Iterator[Path]:
    """A transformers.Trainer checkpoint-N directory with its five torch files."""
    yield hf_checkpoint_folder(tmp_path / "checkpoint-500")


def test_hugging_face_trainer_files_are_recognised(hf_checkpoint: Path) -> None:
    """Guards Hugging Face Trainer files being only 'a dict': each is named; the ones
    weights_only refuses say what blocks (TrainingArguments; rng_state's numpy state) and
    the rng_state allowlist the doctor prints makes it load."""
    found = {p.name: doctor.diagnose(p) for p in sorted(hf_checkpoint.iterdir())}
    for name, diag in found.items():
        assert diag.family is not None and diag.family.library == "Hugging Face transformers"
        assert diag.family.what.split(" ")[0] in ("model", "the"), name
    assert found["pytorch_model.bin"].family.blockers == ()  # type: ignore[union-attr]
    assert found["optimizer.pt"].family.blockers == ()  # type: ignore[union-attr]
    args = found["training_args.bin"].family
    assert args is not None and "transformers.training_args.TrainingArguments" in args.blockers[0]
    rng = found["rng_state.pth"].family
    assert rng is not None and rng.blockers and rng.blockers[0].startswith("numpy:")
    wo = found["rng_state.pth"].for_torch(str(torch.__version__)).weights_only
    assert wo.outcome == "fixable_by_allowlist"
    loaded = torch_compat.load(
        hf_checkpoint / "rng_state.pth", safe_globals=safe_globals_for(wo.allowlist)
    )
    assert loaded["numpy"][0] == "MT19937"


def test_plain_dicts_and_other_zips_are_no_family(tmp_path: Path) -> None:
    """Guards false recognition: a dict with a state_dict but no Lightning version, a
    state_dict named like nothing, and a zip without SB3's members have no family."""
    model, _, _ = trained()
    plain = tmp_path / "model.pt"
    plain.write_bytes(tsave({"state_dict": model.state_dict(), "epoch": 1}))
    assert doctor.diagnose(plain).family is None
    other = tmp_path / "bundle.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("data", "{}")
    assert doctor.diagnose(other).family is None


# --------------------------------------------------------------------------- real zoo files
_ZOO = Path(__file__).resolve().parents[1] / "fixtures" / "zoo" / "t24"
_SB3_KEYS = (
    "policy_class", "_last_obs", "_last_episode_starts", "ep_info_buffer", "ep_success_buffer",
    "observation_space", "action_space", "rollout_buffer_class", "clip_range", "lr_schedule",
)  # fmt: skip
# A protocol-2 pickle that names os.system (posix.system): never unpickled here.
_SYSTEM = b"\x80\x02cposix\nsystem\nq\x00."


def _evil_sb3(tmp_path: Path) -> Path:
    """The zoo's real PPO zip with one cloudpickle entry and ``policy.pth`` replaced by
    pickles naming ``posix.system`` (what the new-user trial built)."""
    out = tmp_path / "evil_sb3.zip"
    member = io.BytesIO()
    with zipfile.ZipFile(member, "w") as z:
        z.writestr("archive/data.pkl", _SYSTEM)
        z.writestr("archive/version", "3\n")
    with zipfile.ZipFile(_ZOO / "sb3_ppo.zip") as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "data":
                parsed = json.loads(data)
                parsed["clip_range"][":serialized:"] = base64.b64encode(_SYSTEM).decode()
                data = json.dumps(parsed).encode()
            elif info.filename == "policy.pth":
                data = member.getvalue()
            dst.writestr(info.filename, data)
    return out


def test_sb3_report_names_every_cloudpickle_entry() -> None:
    """Guards the SB3 report listing only 6 of its 10 cloudpickle entries (new-user trial):
    its PPO.load fix then left 4 entries, two of them pickled functions, to run."""
    family = doctor.diagnose(_ZOO / "sb3_ppo.zip").family
    assert family is not None
    for key in _SB3_KEYS:
        assert key in family.blockers[0] and key in family.fix
    assert "10 cloudpickle entries" in family.blockers[0]


def test_sb3_zip_with_a_dangerous_entry_or_member_is_unsafe(tmp_path: Path) -> None:
    """Guards a malicious SB3 zip judged like a clean one: the doctor never looked inside
    the cloudpickle entries for dangerous globals, nor into the ``.pth`` members that SB3
    (and migrate --trust) unpickle with torch.load; no migrate command is offered."""
    diag = doctor.diagnose(_evil_sb3(tmp_path))
    assert any("member policy.pth names posix.system" in r for r in diag.risks)
    assert any("'clip_range'" in r and "posix.system" in r for r in diag.risks)
    assert diag.migration.command is None
    clean = doctor.diagnose(_ZOO / "sb3_ppo.zip")
    assert clean.risks == ()


def test_sb3_rows_say_not_a_torch_file_not_corrupt() -> None:
    """Guards every per-version row of an SB3 zip saying "the file is corrupt"."""
    diag = doctor.diagnose(_ZOO / "sb3_ppo.zip")
    for report in diag.versions:
        assert "corrupt" not in report.weights_only.why
        assert report.weights_only.why.startswith("not a torch.save file")


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("lightning.ckpt", "--submodule NAME"),
        ("sb3_ppo.zip", "--class-path CLASS_PATH"),
        ("pytorch_model.bin", "--class-path CLASS_PATH"),
        ("training_args.bin", None),
    ],
)
def test_family_files_get_the_migrate_command_migrate_takes(name: str, command: str | None) -> None:
    """Guards the doctor saying "migrate not applicable" for files migrate converts."""
    migration = doctor.diagnose(_ZOO / name).migration
    if command is None:
        assert migration.command is None and migration.note.startswith("not a model")
    else:
        assert migration.command is not None and command in migration.command


def test_trusted_family_migration_does_not_claim_nothing_ran() -> None:
    """Guards ``migrate --trust`` printing "pickled objects reported, never run" after the
    trusted unpickler had run them (new-user trial: a payload in hparams ran)."""
    from ckptcompat.generations.batch import render_report
    from ckptcompat.generations.family_migrate import FamilyMigrationReport

    def report(loader: str) -> str:
        return render_report(
            FamilyMigrationReport(
                "src.ckpt",
                "file:///d.pt",
                "lightning",
                loader,
                (),
                "r",
                1,
                True,
                reported=("hyper_parameters['evil']: posix.system",),
            )
        )

    assert "their code ran" in report("trusted") and "never run" not in report("trusted")
    assert "never run" in report("allowlist")
