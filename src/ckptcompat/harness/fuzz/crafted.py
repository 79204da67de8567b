"""Small hostile files, built from bytes: one per distinct failure of issue 23.

Each builder returns the file's bytes (a few hundred bytes to a few hundred kB; the
deflated opcode bomb is 80 kB that inflate to 80 MB). Standard library only: nothing here
imports torch, so the files are the same on every cell.
"""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
import zlib

__all__ = [
    "BUILDERS",
    "deep_set_member",
    "deep_tuple_key",
    "deflated_opcode_bomb",
    "flip_tensor_bit",
    "legacy_binbytes8_huge",
    "legacy_huge_storage_header",
    "legacy_key_list_holds_list",
    "mark_directory",
    "shift_local_header",
    "surrogate_global",
    "torch_like_zip",
    "tuple_hash_bomb",
]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"int": 4}}


def torch_like_zip(data_pkl: bytes, *, deflate: bool = False, tensor: bytes = b"") -> bytes:
    """A zip laid out as ``torch.save`` writes one: ``archive/data.pkl``, ``byteorder``,
    ``version`` (and ``data/0`` holding ``tensor`` when given)."""
    out = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(out, "w") as z:
        z.writestr(zipfile.ZipInfo("archive/data.pkl"), data_pkl, compress_type=method)
        z.writestr("archive/byteorder", b"little")
        if tensor:
            z.writestr("archive/data/0", tensor)
        z.writestr("archive/version", b"3\n")
    return out.getvalue()


def deep_tuple_key(levels: int = 200_000) -> bytes:
    """Fault 1: a dict keyed by a tuple nested ``levels`` deep; hashing it overflowed the
    C stack of the scan's inert pass (SIGSEGV) before the limit existed."""
    return torch_like_zip(b"\x80\x02}" + b")" + b"\x85" * levels + b"Ns.")


def deep_set_member(levels: int = 200_000) -> bytes:
    """Fault 1, as a set member (protocol 4 EMPTY_SET/ADDITEMS)."""
    return torch_like_zip(b"\x80\x04\x8f(" + b")" + b"\x85" * levels + b"\x90.")


def tuple_hash_bomb(levels: int = 40) -> bytes:
    """A tuple shared through the memo, ``t = (t, t)`` ``levels`` times, then used as a
    dict key: 2**levels hash steps in ~300 bytes of weights-only opcodes (a hang)."""
    body = b"q\x01h\x01\x86" * levels  # BINPUT 1, BINGET 1, TUPLE2: (t, t) on the stack
    return torch_like_zip(b"\x80\x02}q\x00)" + body + b"Ns.")


def deflated_opcode_bomb(inflated_bytes: int = 80 << 20) -> bytes:
    """Fault 2: a deflated ``data.pkl`` of cheap opcodes (NONE, POP) inflating ~1000x."""
    body = b"\x80\x02" + b"N0" * (inflated_bytes // 2) + b"N."
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    compressed = raw.compress(body) + raw.flush()
    zip_bytes = torch_like_zip(b"", deflate=True)
    # Swap the empty record for the bomb, fixing its sizes and CRC in both headers.
    return _replace_record(zip_bytes, "archive/data.pkl", compressed, len(body), zlib.crc32(body))


def _legacy(object_pickle: bytes, keys_pickle: bytes, tail: bytes) -> bytes:
    head = b"".join(pickle.dumps(x, protocol=2) for x in (_LEGACY_MAGIC, 1001, _SYS_INFO))
    return head + object_pickle + keys_pickle + tail


#: A legacy object pickle: one FloatStorage persistent id ("0", 4 elements).
_LEGACY_OBJECT = (
    b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
    b"X\x03\x00\x00\x00cpuK\x04tQ."
)


#: Two FloatStorage persistent ids ("0" and "1", 4 elements each) in a list.
_LEGACY_OBJECT_TWO = (
    b"\x80\x02]((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
    b"X\x03\x00\x00\x00cpuK\x04tQ(X\x07\x00\x00\x00storagectorch\nFloatStorage\n"
    b"X\x01\x00\x00\x001X\x03\x00\x00\x00cpuK\x04tQe."
)


def legacy_huge_storage_header(count: int = 1 << 61) -> bytes:
    """Fault 3: a legacy file whose first storage-size header says ``count`` elements;
    used as the offset of the second header it overflowed the reader's seek
    (OverflowError for 2**61 floats, OSError errno 22 for 2**60)."""
    return _legacy(
        _LEGACY_OBJECT_TWO,
        pickle.dumps(["0", "1"], protocol=2),
        struct.pack("<q", count) + b"\0" * 16 + struct.pack("<q", 4) + b"\0" * 16,
    )


def legacy_key_list_holds_list() -> bytes:
    """Fault 3: the legacy storage-key list holds a list (TypeError: unhashable type)."""
    return _legacy(_LEGACY_OBJECT, pickle.dumps([["0"]], protocol=2), b"\0" * 24)


def legacy_binbytes8_huge(opcode: bytes = b"\x8e") -> bytes:
    """Fault 3: the legacy object pickle declares a BINBYTES8 (``\\x8e``) or BINUNICODE8
    (``\\x8d``) of 2**62 bytes; the doctor's fallback walk allocated it (MemoryError)."""
    obj = b"\x80\x04" + opcode + struct.pack("<Q", 1 << 62) + b"abc."
    return _legacy(obj, pickle.dumps(["0"], protocol=2), b"")


def surrogate_global() -> bytes:
    """Fault 3: a global whose name holds a lone surrogate (STACK_GLOBAL of UTF-8 with
    surrogatepass); printing it raised UnicodeEncodeError in the doctor's text output."""
    name = "\ud800evil".encode("utf-8", "surrogatepass")
    pkl = b"\x80\x04\x8c\x05torch\x8c" + bytes([len(name)]) + name + b"\x93)R."
    return torch_like_zip(pkl)


def _records(zip_bytes: bytes) -> dict[str, zipfile.ZipInfo]:
    return {i.filename: i for i in zipfile.ZipFile(io.BytesIO(zip_bytes)).infolist()}


def _data_start(zip_bytes: bytes, info: zipfile.ZipInfo) -> int:
    at = info.header_offset
    name_len, extra_len = struct.unpack_from("<HH", zip_bytes, at + 26)
    return at + 30 + name_len + extra_len


def flip_tensor_bit(zip_bytes: bytes, record_suffix: str = "/data/0", bit: int = 20) -> bytes:
    """Fault 4: one bit flipped inside a tensor record (torch loads a changed weight)."""
    info = next(i for n, i in _records(zip_bytes).items() if n.endswith(record_suffix))
    out = bytearray(zip_bytes)
    out[_data_start(zip_bytes, info) + bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def shift_local_header(zip_bytes: bytes, record_suffix: str = "/data/0", by: int = 4) -> bytes:
    """Fault 4: a tensor record's local-header extra length grown by ``by`` bytes (torch
    reads the tensor from ``by`` bytes further on)."""
    info = next(i for n, i in _records(zip_bytes).items() if n.endswith(record_suffix))
    out = bytearray(zip_bytes)
    (extra_len,) = struct.unpack_from("<H", out, info.header_offset + 28)
    struct.pack_into("<H", out, info.header_offset + 28, extra_len + by)
    return bytes(out)


def mark_directory(zip_bytes: bytes, record_suffix: str = "/data/0") -> bytes:
    """Fault 4 (found by the fuzz run): the DOS directory bit set in a tensor record's
    central external attributes; miniz then "extracts" nothing, without an error, and
    torch hands out an uninitialised buffer as the tensor (no CRC check sees it: torch
    reads no byte of the record)."""
    info = next(i for n, i in _records(zip_bytes).items() if n.endswith(record_suffix))
    name = info.filename.encode()
    at = next(i for i in _find_central(zip_bytes) if zip_bytes[i + 46 : i + 46 + len(name)] == name)
    out = bytearray(zip_bytes)
    out[at + 38] |= 0x10
    return bytes(out)


def _find_central(zip_bytes: bytes) -> list[int]:
    out, at = [], zip_bytes.find(b"PK\x01\x02")
    while at >= 0:
        out.append(at)
        at = zip_bytes.find(b"PK\x01\x02", at + 1)
    return out


def _replace_record(zip_bytes: bytes, name: str, payload: bytes, usize: int, crc: int) -> bytes:
    """Rebuild a one-pass zip with ``name``'s stored bytes replaced (sizes and CRC set)."""
    src = zipfile.ZipFile(io.BytesIO(zip_bytes))
    out = io.BytesIO()
    central = []
    for info in src.infolist():
        raw = payload if info.filename == name else src.read(info.filename)
        method = info.compress_type if info.filename == name else zipfile.ZIP_STORED
        size = usize if info.filename == name else len(raw)
        rcrc = crc if info.filename == name else zlib.crc32(raw)
        fname = info.filename.encode()
        offset = out.tell()
        out.write(
            struct.pack(
                "<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, rcrc, len(raw), size, len(fname), 0
            )
            + fname
            + raw
        )
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                20,
                20,
                0,
                method,
                0,
                0,
                rcrc,
                len(raw),
                size,
                len(fname),
                0,
                0,
                0,
                0,
                0,
                offset,
            )
            + fname
        )
    cd_at = out.tell()
    cd = b"".join(central)
    out.write(cd)
    out.write(
        struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(central), len(central), len(cd), cd_at, 0)
    )
    return out.getvalue()


#: name -> builder of a file that must be refused with a typed error, never crash or hang.
BUILDERS = {
    "deep_tuple_key": deep_tuple_key,
    "deep_set_member": deep_set_member,
    "tuple_hash_bomb": tuple_hash_bomb,
    "deflated_opcode_bomb": deflated_opcode_bomb,
    "legacy_huge_storage_header": legacy_huge_storage_header,
    "legacy_einval_storage_header": lambda: legacy_huge_storage_header(1 << 60),
    "legacy_negative_storage_header": lambda: legacy_huge_storage_header(-(1 << 62)),
    "legacy_key_list_holds_list": legacy_key_list_holds_list,
    "legacy_binbytes8_huge": legacy_binbytes8_huge,
    "legacy_binunicode8_huge": lambda: legacy_binbytes8_huge(b"\x8d"),
    "surrogate_global": surrogate_global,
}
