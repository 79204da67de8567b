"""torch's weights-only default globals and storage classes, as names; no torch import.

Transcribed from ``torch/_weights_only_unpickler.py`` ``_get_allowed_globals`` of 2.4.1
(the baseline here) plus every later addition in :mod:`ckptcompat.versions_facts` (the
union: the static scan must not refuse what some supported torch accepts by default; that
torch's own unpickler still refuses what it lacks) and from ``torch/storage.py``
``_dtype_to_storage_type_map``. What is refused however it is allowlisted is :mod:`.danger`.
"""

from __future__ import annotations

from ckptcompat import versions_facts

__all__ = [
    "SETITEM_TARGETS",
    "STORAGE_TYPES",
    "TENSOR_REBUILDS",
    "WEIGHTS_ONLY_GLOBALS",
    "qualify",
]

# Legacy storage class stem -> (dtype, element size in bytes).
_STORAGE_STEMS: dict[str, tuple[str, int]] = {
    "Double": ("float64", 8),
    "Float": ("float32", 4),
    "Half": ("float16", 2),
    "Long": ("int64", 8),
    "Int": ("int32", 4),
    "Short": ("int16", 2),
    "Char": ("int8", 1),
    "Byte": ("uint8", 1),
    "Bool": ("bool", 1),
    "BFloat16": ("bfloat16", 2),
    "ComplexDouble": ("complex128", 16),
    "ComplexFloat": ("complex64", 8),
    "QInt8": ("qint8", 1),
    "QInt32": ("qint32", 4),
    "QUInt8": ("quint8", 1),
    "QUInt4x2": ("quint4x2", 1),
    "QUInt2x4": ("quint2x4", 1),
}
_QUANTIZED = ("QInt8", "QInt32", "QUInt8", "QUInt4x2", "QUInt2x4")

#: Storage class global -> (dtype, element size in bytes). torch.save names
#: ``torch.<X>Storage`` (``torch.cuda.<X>Storage`` in files of torch < 1.x era) and, for
#: dtypes without a legacy class, ``torch.storage.UntypedStorage`` whose numel is bytes.
STORAGE_TYPES: dict[str, tuple[str, int]] = {
    **{f"torch.{stem}Storage": spec for stem, spec in _STORAGE_STEMS.items()},
    **{
        f"torch.cuda.{stem}Storage": spec
        for stem, spec in _STORAGE_STEMS.items()
        if stem not in _QUANTIZED
    },
    "torch.storage.UntypedStorage": ("uint8", 1),
    "torch.UntypedStorage": ("uint8", 1),
}

_TENSOR_STEMS = (
    "BFloat16",
    "Bool",
    "Byte",
    "Char",
    "Double",
    "Float",
    "Half",
    "Int",
    "Long",
    "Short",
)
_DTYPES = (
    # 2.4.1
    *("bfloat16", "bits16", "bits1x8", "bits2x4", "bits4x2", "bits8", "bool", "complex128"),
    *("complex32", "complex64", "float16", "float32", "float64", "float8_e4m3fn"),
    *("float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz", "int16", "int32", "int64", "int8"),
    *("qint32", "qint8", "quint2x4", "quint4x2", "quint8", "uint8"),
)
_QSCHEMES = (
    "per_tensor_affine",
    "per_tensor_symmetric",
    "per_channel_affine",
    "per_channel_symmetric",
    "per_channel_affine_float_qparams",
)
_REBUILD = (
    *("parameter", "parameter_with_state", "qtensor", "tensor", "tensor_v2", "tensor_v3"),
    *("sparse_tensor", "meta_tensor_no_storage", "wrapper_subclass"),
    "nested_tensor",  # 2.4-2.6; gone from 2.15.0's list
    "device_tensor_from_numpy",  # 2.5+
    "device_tensor_from_cpu_tensor",  # 2.6+
)

#: Globals whose call returns a tensor (or Parameter) in torch.save pickles.
TENSOR_REBUILDS: frozenset[str] = frozenset(
    [f"torch._utils._rebuild_{fn}" for fn in _REBUILD] + ["torch._tensor._rebuild_from_type_v2"]
)

#: Every global some torch 2.4-2.15 weights-only unpickler accepts without an allowlist:
#: 2.4.1's, and each later release's additions (``globals_added`` facts).
WEIGHTS_ONLY_GLOBALS: frozenset[str] = versions_facts.all_names("globals_added") | frozenset(
    [
        "collections.OrderedDict",
        "collections.Counter",
        "torch.nn.parameter.Parameter",
        "torch.serialization._get_layout",
        "torch.Size",
        "torch.Tensor",
        "torch.device",
        "torch.storage.TypedStorage",
        "torch.storage.UntypedStorage",
        "torch._tensor._rebuild_from_type_v2",
    ]
    + [name for name in STORAGE_TYPES if name != "torch.UntypedStorage"]
    + [f"torch.{stem}Tensor" for stem in _TENSOR_STEMS]
    + [f"torch.cuda.{stem}Tensor" for stem in _TENSOR_STEMS]
    + [f"torch.sparse.{stem}Tensor" for stem in _TENSOR_STEMS if stem != "Bool"]
    + [f"torch.cuda.sparse.{stem}Tensor" for stem in _TENSOR_STEMS if stem != "Bool"]
    + [f"torch.{dtype}" for dtype in _DTYPES]
    + [f"torch.{scheme}" for scheme in _QSCHEMES]
    + [f"torch._utils._rebuild_{fn}" for fn in _REBUILD]
)

#: Targets besides dict torch 2.10+ accepts for SETITEM(S) (``_check_set_item_target``).
SETITEM_TARGETS: frozenset[str] = versions_facts.all_names("setitem_restricted")

# torch._utils IMPORT_MAPPING / NAME_MAPPING (py2 -> py3 names), applied by the weights-only
# unpickler before the allowlist lookup: on 2.4/2.5 for protocol-2 pickles, on 2.6+ always.
_IMPORT_MAPPING = {
    "__builtin__": "builtins",
    "copy_reg": "copyreg",
    "Queue": "queue",
    "repr": "reprlib",
    "_abcoll": "collections.abc",
    "UserDict": "collections",
    "UserList": "collections",
    "UserString": "collections",
    "whichdb": "dbm",
    "StringIO": "io",
    "cStringIO": "io",
}
_NAME_MAPPING = {
    ("__builtin__", "xrange"): ("builtins", "range"),
    ("__builtin__", "reduce"): ("functools", "reduce"),
    ("__builtin__", "intern"): ("sys", "intern"),
    ("__builtin__", "unichr"): ("builtins", "chr"),
    ("__builtin__", "unicode"): ("builtins", "str"),
    ("__builtin__", "long"): ("builtins", "int"),
    ("itertools", "izip"): ("builtins", "zip"),
    ("itertools", "imap"): ("builtins", "map"),
    ("itertools", "ifilter"): ("builtins", "filter"),
    ("itertools", "ifilterfalse"): ("itertools", "filterfalse"),
    ("itertools", "izip_longest"): ("itertools", "zip_longest"),
    ("UserDict", "IterableUserDict"): ("collections", "UserDict"),
    ("UserList", "UserList"): ("collections", "UserList"),
    ("UserString", "UserString"): ("collections", "UserString"),
    ("__builtin__", "basestring"): ("builtins", "str"),
    ("exceptions", "StandardError"): ("builtins", "Exception"),
    ("UserDict", "UserDict"): ("collections", "UserDict"),
}


def qualify(module: str, name: str) -> str:
    """``"module.name"`` after torch's py2->py3 renaming (``__builtin__.eval`` is
    ``builtins.eval``)."""
    if (module, name) in _NAME_MAPPING:
        module, name = _NAME_MAPPING[(module, name)]
    else:
        module = _IMPORT_MAPPING.get(module, module)
    return f"{module}.{name}"
