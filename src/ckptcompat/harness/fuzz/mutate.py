"""Seeded mutations of a checkpoint's bytes, one function per kind of issue 23.

Every mutation takes the base file's bytes and a :class:`random.Random` and returns new
bytes; the same seed gives the same file. Byte-level kinds (bit flips, truncation,
duplicated and deleted spans, zip fields, huge lengths in the directory) leave the zip's
CRC-32s as they were, so a load that returns anything but the original payload is a
silent wrong load. Pickle-level kinds (opcodes, huge declared lengths, deep nesting,
memo indices) rewrite ``data.pkl`` and store it with a correct CRC, so the bytes reach
the unpickler: what they load is whatever the new pickle says. Standard library only.
"""

from __future__ import annotations

import io
import pickletools
import random
import struct
import zipfile
from collections.abc import Callable

__all__ = ["BYTE_KINDS", "KINDS", "PICKLE_KINDS", "mutate"]

_OPCODE_BYTES = sorted(ord(op.code) for op in pickletools.opcodes)
_LENGTH_OPS = {"BINUNICODE": 4, "BINBYTES": 4, "BINSTRING": 4, "SHORT_BINUNICODE": 1,
               "SHORT_BINBYTES": 1, "SHORT_BINSTRING": 1, "LONG1": 1, "LONG4": 4,
               "BINUNICODE8": 8, "BINBYTES8": 8, "BYTEARRAY8": 8}  # fmt: skip
_MEMO_OPS = {"BINPUT": 1, "LONG_BINPUT": 4, "BINGET": 1, "LONG_BINGET": 4}
_EXTREMES = (0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, (1 << 62), (1 << 64) - 1)


def _span(rng: random.Random, size: int) -> tuple[int, int]:
    start = rng.randrange(size)
    return start, min(size, start + rng.choice((1, 2, 4, 8, 64, 512, 4096)))


def bit_flip(data: bytes, rng: random.Random) -> bytes:
    """Flip 1 to 8 bits anywhere."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut the file short (anywhere, or within its last 100 bytes)."""
    cut = rng.randrange(len(data)) if rng.random() < 0.5 else len(data) - rng.randint(1, 100)
    return data[: max(cut, 0)]


def duplicate_span(data: bytes, rng: random.Random) -> bytes:
    """Insert a copy of a span right after it."""
    start, end = _span(rng, len(data))
    return data[:end] + data[start:end] + data[end:]


def delete_span(data: bytes, rng: random.Random) -> bytes:
    """Remove a span."""
    start, end = _span(rng, len(data))
    return data[:start] + data[end:]


def zip_field(data: bytes, rng: random.Random) -> bytes:
    """Set one field of a local header, central-directory record or end record to an
    extreme or random value (offsets, sizes, counts, name/extra lengths, CRC, method)."""
    marks = [
        (sig, i)
        for sig in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07")
        for i in _find_all(data, sig)
    ]
    if not marks:
        return bit_flip(data, rng)
    sig, at = rng.choice(marks)
    fields = {  # offset in the record: width (bytes)
        b"PK\x03\x04": {6: 2, 8: 2, 14: 4, 18: 4, 22: 4, 26: 2, 28: 2},
        b"PK\x01\x02": {8: 2, 10: 2, 16: 4, 20: 4, 24: 4, 28: 2, 30: 2, 32: 2, 42: 4},
        b"PK\x05\x06": {8: 2, 10: 2, 12: 4, 16: 4, 20: 2},
        b"PK\x06\x06": {24: 8, 32: 8, 40: 8, 48: 8},
        b"PK\x06\x07": {8: 8},
    }[sig]
    offset, width = rng.choice(sorted(fields.items()))
    value = rng.choice((*_EXTREMES, rng.getrandbits(8 * width)))
    value &= (1 << (8 * width)) - 1
    out = bytearray(data)
    if at + offset + width <= len(out):
        out[at + offset : at + offset + width] = value.to_bytes(width, "little")
    return bytes(out)


def _find_all(data: bytes, needle: bytes) -> list[int]:
    out, at = [], data.find(needle)
    while at >= 0 and len(out) < 100_000:
        out.append(at)
        at = data.find(needle, at + 1)
    return out


# ------------------------------------------------------------------ pickle-level kinds
def _ops(pkl: bytes) -> list[tuple[str, int]]:
    try:
        return [(op.name, pos) for op, _, pos in pickletools.genops(pkl)]  # type: ignore[misc]
    except (ValueError, EOFError):
        return []


def pickle_opcode(pkl: bytes, rng: random.Random) -> bytes:
    """Replace, insert or delete opcode bytes at opcode boundaries of ``data.pkl``."""
    ops = _ops(pkl) or [("?", 0)]
    out = bytearray(pkl)
    for _ in range(rng.randint(1, 3)):
        _, pos = rng.choice(ops)
        pos = min(pos, len(out) - 1) if out else 0
        choice = rng.random()
        byte = rng.choice(_OPCODE_BYTES)
        if choice < 0.5 and out:
            out[pos] = byte
        elif choice < 0.8:
            out[pos:pos] = bytes([byte])
        elif out:
            del out[pos]
    return bytes(out)


def huge_length(pkl: bytes, rng: random.Random) -> bytes:
    """Set a string/bytes/long opcode's declared length to an extreme value, or insert a
    BINBYTES8/BINUNICODE8 declaring up to 2**64 - 1 bytes."""
    ops = [(n, p) for n, p in _ops(pkl) if n in _LENGTH_OPS]
    out = bytearray(pkl)
    if ops and rng.random() < 0.7:
        name, pos = rng.choice(ops)
        width = _LENGTH_OPS[name]
        value = rng.choice(_EXTREMES) & ((1 << (8 * width)) - 1)
        out[pos + 1 : pos + 1 + width] = value.to_bytes(width, "little")
        return bytes(out)
    at = rng.choice([p for _, p in _ops(pkl)] or [0])
    opcode = rng.choice((b"\x8e", b"\x8d", b"\x96"))  # BINBYTES8, BINUNICODE8, BYTEARRAY8
    size = rng.choice(((1 << 62), (1 << 64) - 1, (1 << 31), len(pkl) * 4))
    return bytes(out[:at]) + opcode + struct.pack("<Q", size) + bytes(out[at:])


_DEEP = (
    (b"}", b")", b"\x85", b"Ns"),  # dict keyed by a deep tuple
    (b"\x8f(", b")", b"\x85", b"\x90"),  # set member (protocol 4)
    (b"]", b"]", b"\x85", b"a"),  # list holding a deep tuple of lists
    (b"(", b")", b"\x85", b"\x91"),  # frozenset member
    (b"", b"]", b"q\x000]h\x00a", b""),  # lists nested through the memo: L = [L]
)


def deep_nesting(pkl: bytes, rng: random.Random) -> bytes:
    """Put a deeply nested structure (150 to 300k levels) before the original object:
    a dict key, set or frozenset member, list, or a tuple shared through the memo."""
    head, seed, step, tail = rng.choice(_DEEP)
    levels = rng.choice((150, 201, 1000, 30_000, 300_000))
    if rng.random() < 0.3:  # the hash bomb: t = (t, t) through the memo
        deep = b"}q\x00)" + b"q\x01h\x01\x86" * rng.choice((24, 40, 64)) + b"Ns0"
    else:
        deep = head + seed + step * levels + tail + b"0"
    body = pkl[2:] if pkl[:1] == b"\x80" else pkl
    return b"\x80\x04" + deep + body


def memo_index(pkl: bytes, rng: random.Random) -> bytes:
    """Set a memo PUT/GET index to an out-of-range value, or add a LONG_BINGET of one."""
    ops = [(n, p) for n, p in _ops(pkl) if n in _MEMO_OPS]
    out = bytearray(pkl)
    if ops and rng.random() < 0.7:
        name, pos = rng.choice(ops)
        width = _MEMO_OPS[name]
        value = rng.choice((*_EXTREMES, len(pkl), len(pkl) * 2)) & ((1 << (8 * width)) - 1)
        out[pos + 1 : pos + 1 + width] = value.to_bytes(width, "little")
        return bytes(out)
    at = rng.choice([p for _, p in _ops(pkl)] or [0])
    index = rng.choice((len(pkl), 1 << 20, (1 << 32) - 1))
    return bytes(out[:at]) + b"j" + struct.pack("<I", index) + bytes(out[at:])


BYTE_KINDS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "bit_flip": bit_flip,
    "truncate": truncate,
    "duplicate_span": duplicate_span,
    "delete_span": delete_span,
    "zip_field": zip_field,
}
PICKLE_KINDS: dict[str, Callable[[bytes, random.Random], bytes]] = {
    "pickle_opcode": pickle_opcode,
    "huge_length": huge_length,
    "deep_nesting": deep_nesting,
    "memo_index": memo_index,
}
KINDS = (*BYTE_KINDS, *PICKLE_KINDS)


def mutate(data: bytes, kind: str, rng: random.Random) -> bytes:
    """``data`` mutated by ``kind`` (one of :data:`KINDS`).

    Pickle-level kinds rewrite the object pickle: ``data.pkl`` of a zip (stored again
    with a correct CRC-32), or the whole stream of a legacy (non-zip) file.
    """
    if kind in BYTE_KINDS:
        return BYTE_KINDS[kind](data, rng) if data else data
    change = PICKLE_KINDS[kind]
    if not data.startswith(b"PK\x03\x04"):
        return change(data, rng)
    try:
        src = zipfile.ZipFile(io.BytesIO(data))
        records = [(i.filename, src.read(i.filename)) for i in src.infolist()]
    except (zipfile.BadZipFile, ValueError, OSError):
        return bit_flip(data, rng)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, payload in records:
            changed = change(payload, rng) if name.endswith("data.pkl") else payload
            z.writestr(zipfile.ZipInfo(name), changed)
    return out.getvalue()
