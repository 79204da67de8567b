"""The safetensors dtypes, and which safetensors releases read each: one table.

Kept apart from the header reader (:mod:`.safetensors_header`) so that the version facts
have one home; :mod:`.safetensors_compat` turns them into per-version predictions.
Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DTYPES", "FORMAT_SINCE", "OLDEST_PROBED", "DType"]


@dataclass(frozen=True)
class DType:
    """One safetensors dtype.

    Attributes:
        name: the header's spelling, ``"BF16"``.
        bits: bits per element (``F4`` packs two elements in a byte, ``F6_*`` four in three).
        torch_name: the ``torch`` dtype attribute it maps to, ``"bfloat16"`` (``""``: torch
            has none); its first torch release is in :mod:`ckptcompat.versions_facts`
            (``dtypes`` rows).
        safetensors_since: the first safetensors release whose ``safetensors.torch.load_file``
            builds it (given torch has the dtype); ``None``: none through 0.8.0.
        load_bytes_since: the same for ``safetensors.torch.load(bytes)``, whose dtype table
            (``_TYPES`` in ``safetensors/torch.py``) is not the one ``load_file`` uses (the
            Rust binding's); ``None``: none through 0.8.0.
    """

    name: str
    bits: int
    torch_name: str
    safetensors_since: str | None
    load_bytes_since: str | None


#: The oldest safetensors release probed; "every release this project meets".
OLDEST_PROBED = "0.3.3"


def _dt(
    name: str, bits: int, torch_name: str, since: str | None = OLDEST_PROBED, load: str | None = ""
) -> tuple[str, DType]:
    return name, DType(name, bits, torch_name, since, since if load == "" else load)


#: Every dtype this reader knows, with the safetensors releases that read it. Sources: the
#: ``_TYPES`` table of ``safetensors/torch.py`` in each published wheel (0.3.3 ... 0.8.0),
#: and files of each dtype loaded with ``load_file`` and ``load`` on torch 2.4.1, 2.5.1,
#: 2.6.0 and 2.15.0 (issue 22):
#:
#: * F8_E4M3, F8_E5M2: from 0.4.2 (0.4.1: "Dtype not understood"; safetensors PR #404);
#: * U16, U32, U64: ``load_file`` reads them in every release, ``load(bytes)`` from 0.6.1
#:   (``_TYPES`` had them commented out through 0.5.3: ``KeyError: 'U16'``);
#: * F8_E8M0, F4: the format knows them from 0.6.1 (0.6.0 is not on PyPI's index; 0.5.3
#:   refuses the header); ``load_file`` builds them where torch has ``float8_e8m0fnu``
#:   (2.7) / ``float4_e2m1fn_x2`` (2.8) and raises a bare ``AttributeError`` on older
#:   torch; ``load(bytes)`` never builds them (not in ``_TYPES`` through 0.8.0:
#:   ``KeyError: 'F8_E8M0'``, even on torch 2.15). ``load_file`` returns ``F4`` of shape
#:   ``[..., n]`` as ``float4_e2m1fn_x2`` of shape ``[..., n / 2]``;
#: * F6_E2M3, F6_E3M2: the format knows them from 0.6.1; no torch dtype, so the torch
#:   binding refuses them ("Dtype not understood") on every torch;
#: * C64: from 0.7.0; F8_E4M3FNUZ, F8_E5M2FNUZ: from 0.8.0 (older: "unknown variant").
DTYPES: dict[str, DType] = dict(
    (
        _dt("BOOL", 8, "bool"),
        _dt("U8", 8, "uint8"),
        _dt("I8", 8, "int8"),
        _dt("I16", 16, "int16"),
        _dt("U16", 16, "uint16", load="0.6.1"),
        _dt("F16", 16, "float16"),
        _dt("BF16", 16, "bfloat16"),
        _dt("I32", 32, "int32"),
        _dt("U32", 32, "uint32", load="0.6.1"),
        _dt("F32", 32, "float32"),
        _dt("I64", 64, "int64"),
        _dt("U64", 64, "uint64", load="0.6.1"),
        _dt("F64", 64, "float64"),
        _dt("C64", 64, "complex64", "0.7.0"),
        _dt("F8_E4M3", 8, "float8_e4m3fn", "0.4.2"),
        _dt("F8_E5M2", 8, "float8_e5m2", "0.4.2"),
        _dt("F8_E4M3FNUZ", 8, "float8_e4m3fnuz", "0.8.0"),
        _dt("F8_E5M2FNUZ", 8, "float8_e5m2fnuz", "0.8.0"),
        _dt("F8_E8M0", 8, "float8_e8m0fnu", "0.6.1", None),
        _dt("F4", 4, "float4_e2m1fn_x2", "0.6.1", None),
        _dt("F6_E2M3", 6, "", None, None),
        _dt("F6_E3M2", 6, "", None, None),
    )
)
#: The first release whose header parser knows each dtype, where that is earlier than
#: ``load_file`` building it (F6: parsed from 0.6.1, never built).
FORMAT_SINCE: dict[str, str] = {"F6_E2M3": "0.6.1", "F6_E3M2": "0.6.1"}
