"""What the first bytes of a file say about its format, without any model library.

The server process recognises uploads with these (the frameworks' ``sniff`` and
``check``); nothing here imports numpy or a model library::

    >>> describe(b"PK\\x03\\x04...")
    'a zip archive'
    >>> zip_names(open("model.keras", "rb").read(4096))
    ['metadata.json', 'config.json', 'model.weights.h5']
"""

from __future__ import annotations

import struct

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
PICKLE_PROTOCOL = b"\x80"  # the PROTO opcode that starts every pickle of protocol 2 and later
# joblib.dump(..., compress=...) writes a compressed pickle; these are the compressors' headers.
JOBLIB_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"BZh": "bz2",
    b"\xfd7zXZ\x00": "xz",
    b"]\x00\x00": "lzma",
    b'\x04"M\x18': "lz4",
    b"ZF": "zlib (joblib < 0.10)",
}
_ZLIB_SECOND_BYTES = (0x01, 0x5E, 0x9C, 0xDA)  # 0x78 then one of these: a zlib stream


def is_zip(head: bytes) -> bool:
    """A zip archive (``.keras``, ``.skops``, TorchScript and ``.pt2`` files are)."""
    return head.startswith(ZIP_MAGIC)


def is_hdf5(head: bytes) -> bool:
    """An HDF5 file (legacy Keras ``.h5``)."""
    return head.startswith(HDF5_MAGIC)


def is_pickle(head: bytes) -> bool:
    """A pickle of protocol 2 or later: ``\\x80`` then the protocol number (2..5)."""
    return len(head) >= 2 and head[:1] == PICKLE_PROTOCOL and 2 <= head[1] <= 5


def compression(head: bytes) -> str | None:
    """The compressor of a compressed joblib file, or None."""
    for magic, name in JOBLIB_COMPRESSED.items():
        if head.startswith(magic):
            return name
    if len(head) >= 2 and head[0] == 0x78 and head[1] in _ZLIB_SECOND_BYTES:
        return "zlib"
    return None


def zip_names(head: bytes) -> list[str]:
    """The names of the zip entries whose local headers lie within ``head``, in order.

    Stops at the first entry whose size is not in its local header (written with a
    data descriptor, as PyTorch does): only that entry's name is known then.
    """
    names: list[str] = []
    offset = 0
    while head.startswith(ZIP_MAGIC, offset) and offset + 30 <= len(head):
        flags, size, name_len, extra_len = (
            struct.unpack_from("<H", head, offset + 6)[0],
            struct.unpack_from("<I", head, offset + 18)[0],
            *struct.unpack_from("<HH", head, offset + 26),
        )
        start = offset + 30
        if start + name_len > len(head):
            break
        names.append(head[start : start + name_len].decode("utf-8", "replace"))
        if flags & 0x08 or size == 0xFFFFFFFF:
            break
        offset = start + name_len + extra_len + size
    return names


def zip_first_payload(head: bytes) -> bytes:
    """The bytes of the first zip entry that lie within ``head`` (stored entries only)."""
    if not is_zip(head) or len(head) < 30:
        return b""
    name_len, extra_len = struct.unpack_from("<HH", head, 26)
    return head[30 + name_len + extra_len :]


def describe(head: bytes) -> str:
    """What the bytes look like, in words, for error messages."""
    if not head:
        return "an empty file"
    if is_zip(head):
        names = zip_names(head)
        return "a zip archive" + (f" (first entry {names[0]!r})" if names else "")
    if is_hdf5(head):
        return "an HDF5 file"
    if is_pickle(head):
        return "a pickle"
    if compression(head):
        return f"{compression(head)}-compressed data"
    if head[:1] == b"\x08":
        return "a protobuf message (ONNX?)"
    if head.lstrip()[:1] in (b"{", b"["):
        return "JSON text"
    return f"bytes starting {head[:8]!r}"
