#!/usr/bin/env python3
"""Extracts the ELF vmlinux from an x86 bzImage, and checks for the PVH note.

    extract-vmlinux.py extract BZIMAGE OUT    write the ELF vmlinux to OUT
    extract-vmlinux.py check-pvh ELF          exit 0 if ELF has a PVH entry note

The compressed payload is found from the setup header (boot protocol >= 2.08:
`setup_sects` at 0x1f1, `payload_offset` / `payload_length` at 0x248 / 0x24c);
if that does not yield an ELF, every offset where a known magic (gzip, xz,
lzma, bzip2, zstd, lz4, lzo) appears is tried, as Linux's
scripts/extract-vmlinux does. gzip, xz, lzma and bzip2 use Python's standard
library; zstd, lz4 and lzop use the command-line tools (Debian packages zstd,
lz4, lzop) when installed.

The PVH note is the ELF note named "Xen" of type 18
(XEN_ELFNOTE_PHYS32_ENTRY) holding the 32-bit entry point; it is looked for
in PT_NOTE segments, then SHT_NOTE sections.
"""

import bz2
import lzma
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

XEN_ELFNOTE_PHYS32_ENTRY = 18

# (name, magic); the lzma "alone" magic is a guess (properties 0x5d, a
# dictionary size with zero top bytes) that Linux's own script also uses.
MAGICS = [
    ("gzip", b"\x1f\x8b\x08"),
    ("xz", b"\xfd7zXZ\x00"),
    ("bzip2", b"BZh"),
    ("lzma", b"\x5d\x00\x00"),
    ("zstd", b"\x28\xb5\x2f\xfd"),
    ("lz4", b"\x02\x21\x4c\x18"),
    ("lzo", b"\x89\x4c\x5a\x4f\x00\x0d\x0a\x1a\x0a"),
]

TOOLS = {"zstd": ["zstd", "-dcq"], "lz4": ["lz4", "-dcq"], "lzo": ["lzop", "-dcq"]}


class ExtractError(Exception):
    pass


def decompress(kind, data):
    """Decompresses one stream of `kind` at the start of `data` (trailing
    bytes, such as the 4-byte size Linux appends, are ignored). Returns
    None if it does not decompress."""
    try:
        if kind == "gzip":
            d = zlib.decompressobj(wbits=31)
            return d.decompress(data)
        if kind == "xz":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
        if kind == "lzma":
            return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(data)
        if kind == "bzip2":
            return bz2.BZ2Decompressor().decompress(data)
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError):
        return None
    tool = TOOLS[kind]
    if shutil.which(tool[0]) is None:
        raise ExtractError(
            f"the payload is {kind}-compressed but `{tool[0]}` is not installed "
            f"(apt-get install -y {'lzop' if kind == 'lzo' else tool[0]})"
        )
    # The tools reject trailing garbage: try the whole payload, then without
    # the 4-byte decompressed size that Linux appends.
    for chunk in (data, data[:-4]):
        with tempfile.NamedTemporaryFile() as f:
            f.write(chunk)
            f.flush()
            r = subprocess.run(tool + [f.name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if r.stdout[:4] == b"\x7fELF":
            return r.stdout
    return None


def is_elf(data):
    return data is not None and data[:4] == b"\x7fELF"


def from_header(img):
    """The payload named by the setup header, or None."""
    if len(img) < 0x250 or img[0x202:0x206] != b"HdrS":
        return None
    version = struct.unpack_from("<H", img, 0x206)[0]
    if version < 0x208:
        return None
    setup_sects = img[0x1F1] or 4
    offset, length = struct.unpack_from("<II", img, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if length == 0 or start + length > len(img):
        return None
    return memoryview(img)[start : start + length]


def extract(img):
    """Returns (kind, where, vmlinux bytes)."""
    payload = from_header(img)
    if payload is not None:
        for kind, magic in MAGICS:
            if bytes(payload[: len(magic)]) == magic:
                out = decompress(kind, payload)
                if is_elf(out):
                    return kind, "setup header payload", out
    # Fallback: scan for magics, in the order Linux's script tries them
    # (through a memoryview: no copy of the image per candidate).
    view = memoryview(img)
    for kind, magic in MAGICS:
        pos = img.find(magic)
        while pos != -1:
            out = decompress(kind, view[pos:])
            if is_elf(out):
                return kind, f"offset {pos:#x}", out
            pos = img.find(magic, pos + 1)
    raise ExtractError("no compressed ELF payload found (tried " + ", ".join(k for k, _ in MAGICS) + ")")


def iter_notes(data, off, size, little):
    e = "<" if little else ">"
    end = off + size
    while off + 12 <= end:
        namesz, descsz, ntype = struct.unpack_from(e + "III", data, off)
        name_off = off + 12
        desc_off = name_off + ((namesz + 3) & ~3)
        next_off = desc_off + ((descsz + 3) & ~3)
        if next_off > end:
            return
        name = data[name_off : name_off + namesz].rstrip(b"\x00")
        yield name, ntype, data[desc_off : desc_off + descsz]
        off = next_off


def pvh_entry(data):
    """The PVH entry address of an ELF64 image, or None."""
    if data[:4] != b"\x7fELF":
        raise ExtractError("not an ELF file")
    if data[4] != 2:
        raise ExtractError("not a 64-bit ELF file")
    little = data[5] == 1
    e = "<" if little else ">"
    phoff, shoff = struct.unpack_from(e + "QQ", data, 0x20)
    phentsize, phnum, shentsize, shnum = struct.unpack_from(e + "HHHH", data, 0x36)
    areas = []
    for i in range(phnum):
        p = phoff + i * phentsize
        p_type = struct.unpack_from(e + "I", data, p)[0]
        if p_type == 4:  # PT_NOTE
            p_offset, _, _, p_filesz = struct.unpack_from(e + "QQQQ", data, p + 8)
            areas.append((p_offset, p_filesz))
    for i in range(shnum):
        s = shoff + i * shentsize
        sh_type = struct.unpack_from(e + "I", data, s + 4)[0]
        if sh_type == 7:  # SHT_NOTE
            sh_offset, sh_size = struct.unpack_from(e + "QQ", data, s + 24)
            areas.append((sh_offset, sh_size))
    for off, size in areas:
        for name, ntype, desc in iter_notes(data, off, size, little):
            if name == b"Xen" and ntype == XEN_ELFNOTE_PHYS32_ENTRY and len(desc) >= 4:
                return struct.unpack_from(e + "I", desc, 0)[0]
    return None


def main(argv):
    if len(argv) == 4 and argv[1] == "extract":
        with open(argv[2], "rb") as f:
            img = f.read()
        kind, where, elf = extract(img)
        tmp = argv[3] + ".tmp"
        with open(tmp, "wb") as f:
            f.write(elf)
        os.replace(tmp, argv[3])
        print(f"extract-vmlinux: {kind} payload at {where}: {len(elf)} bytes -> {argv[3]}", file=sys.stderr)
        return 0
    if len(argv) == 3 and argv[1] == "check-pvh":
        with open(argv[2], "rb") as f:
            data = f.read()
        entry = pvh_entry(data)
        if entry is None:
            raise ExtractError(f"{argv[2]} has no PVH note (ELF note \"Xen\" type {XEN_ELFNOTE_PHYS32_ENTRY})")
        print(f"pvh_entry={entry:#x}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except (ExtractError, OSError, struct.error) as err:
        print(f"extract-vmlinux: {err}", file=sys.stderr)
        sys.exit(1)
