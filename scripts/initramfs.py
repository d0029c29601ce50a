#!/usr/bin/env python3
"""Helpers for scripts/build-initramfs.sh: kernel-module dependencies and a
newc cpio writer, so that neither kmod (modinfo, depmod) nor cpio is needed.

    initramfs.py modules MODDIR NAME...   print the modules NAME need, in load
                                          order (dependencies first), as paths
                                          relative to MODDIR
    initramfs.py pack STAGING OUT         write STAGING as a gzip-compressed
                                          newc cpio to OUT, plus /dev/console
    initramfs.py list ARCHIVE             list a (gzip-compressed) newc cpio

MODDIR is a `lib/modules/<release>` tree as a linux-image .deb ships it: it
has no modules.dep (depmod makes that at install time), so dependencies come
from each module's `.modinfo` ELF section: `depends=` (hard dependencies,
module names) and `softdep=` (its `pre:` names, module names or aliases such
as `crc32c`, which ext4 loads through the crypto API and which insmod cannot
resolve at run time). An alias several modules provide resolves to the
`*_generic` one when there is one (no CPU-feature requirements), else to the
first by path.

The archive's entries are owned by root, keep the staging files' permission
bits and have mtime 0; /dev/console (character 5:1) is added so that the
kernel can open the initial console for /init (`mknod` would need root).
"""

import gzip
import os
import stat
import struct
import sys


class Error(Exception):
    pass


def modinfo(path):
    """The `.modinfo` section of a little-endian ELF64 module as (key, value)
    pairs. Compressed modules (.ko.xz, .ko.gz, .ko.zst) are decompressed."""
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".xz"):
        import lzma

        data = lzma.decompress(data)
    elif path.endswith(".gz"):
        data = gzip.decompress(data)
    elif path.endswith(".zst"):
        import subprocess

        data = subprocess.run(["zstd", "-dcq", path], check=True, capture_output=True).stdout
    if data[:6] != b"\x7fELF\x02\x01":
        raise Error(f"{path}: not a little-endian ELF64 module")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i):
        name, _type, _flags, _addr, off, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + i * shentsize
        )
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        end = data.index(b"\0", stroff + name)
        if data[stroff + name : end] == b".modinfo":
            pairs = []
            for item in data[off : off + size].split(b"\0"):
                if b"=" in item:
                    k, v = item.decode(errors="replace").split("=", 1)
                    pairs.append((k, v))
            return pairs
    raise Error(f"{path}: no .modinfo section")


def module_name(rel):
    base = os.path.basename(rel)
    base = base.split(".ko")[0]
    return base.replace("-", "_")


def index(moddir):
    """Maps module name -> relative path, and alias -> [module names]."""
    paths = {}
    for root, _dirs, files in os.walk(moddir):
        for f in files:
            if ".ko" in f and f.split(".ko")[1] in ("", ".xz", ".gz", ".zst"):
                rel = os.path.relpath(os.path.join(root, f), moddir)
                paths[module_name(rel)] = rel
    return paths


def resolve_alias(moddir, paths, name, cache):
    """The module that provides `name`: the module itself, or a module with
    `alias=name` (or `alias=crypto-name`)."""
    key = name.replace("-", "_")
    if key in paths:
        return key
    wanted = {name, "crypto-" + name}
    providers = []
    for mod, rel in sorted(paths.items(), key=lambda kv: kv[1]):
        # Cheap pre-filter before parsing the ELF.
        with open(os.path.join(moddir, rel), "rb") as f:
            raw = f.read()
        if rel.endswith(".ko") and not any(("alias=" + w).encode() in raw for w in wanted):
            continue
        info = cache.setdefault(mod, modinfo(os.path.join(moddir, rel)))
        if any(k == "alias" and v in wanted for k, v in info):
            providers.append(mod)
    if not providers:
        raise Error(f"no module is or provides {name!r} in {moddir}")
    generic = [p for p in providers if p.endswith("_generic")]
    return (generic or providers)[0]


def load_order(moddir, names):
    paths = index(moddir)
    cache = {}
    order, state = [], {}

    def visit(name, chain):
        mod = resolve_alias(moddir, paths, name, cache)
        if state.get(mod) == "done":
            return
        if state.get(mod) == "visiting":
            raise Error("dependency cycle: " + " -> ".join(chain + [mod]))
        state[mod] = "visiting"
        info = cache.setdefault(mod, modinfo(os.path.join(moddir, paths[mod])))
        deps = []
        for k, v in info:
            if k == "depends":
                deps += [d for d in v.split(",") if d]
            elif k == "softdep":
                # "pre: a b post: c": only the pre: names must come first.
                words, pre = v.split(), False
                for w in words:
                    if w.endswith(":"):
                        pre = w == "pre:"
                    elif pre:
                        deps.append(w)
        for d in deps:
            visit(d, chain + [mod])
        state[mod] = "done"
        order.append(paths[mod])

    for n in names:
        visit(n, [])
    return order


def newc(name, mode, data=b"", rdev=(0, 0), ino=0):
    name_b = name.encode() + b"\0"
    hdr = b"070701" + b"".join(
        b"%08X" % v
        for v in (
            ino,
            mode,
            0,  # uid
            0,  # gid
            1,  # nlink
            0,  # mtime
            len(data),
            0,  # devmajor
            0,  # devminor
            rdev[0],
            rdev[1],
            len(name_b),
            0,  # check
        )
    )
    out = hdr + name_b
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return out


def pack(staging, out):
    entries = []
    for root, dirs, files in os.walk(staging):
        dirs.sort()
        for n in sorted(dirs + files):
            entries.append(os.path.join(root, n))
    parts, ino = [], 1
    names = set()
    for p in entries:
        rel = os.path.relpath(p, staging)
        st = os.lstat(p)
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            parts.append(newc(rel, stat.S_IFLNK | 0o777, os.readlink(p).encode(), ino=ino))
        elif stat.S_ISDIR(st.st_mode):
            parts.append(newc(rel, stat.S_IFDIR | perm, ino=ino))
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                parts.append(newc(rel, stat.S_IFREG | perm, f.read(), ino=ino))
        else:
            raise Error(f"{p}: not a file, directory or symlink")
        names.add(rel)
        ino += 1
    if "dev" not in names:
        parts.append(newc("dev", stat.S_IFDIR | 0o755, ino=ino))
        ino += 1
    if "dev/console" not in names:
        parts.append(newc("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1), ino=ino))
    parts.append(newc("TRAILER!!!", 0))
    body = b"".join(parts)
    body += b"\0" * (-len(body) % 512)
    tmp = out + ".tmp%d" % os.getpid()
    with open(tmp, "wb") as f:
        f.write(gzip.compress(body, compresslevel=6, mtime=0))
    os.replace(tmp, out)


def listing(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    at = 0
    while True:
        if data[at : at + 6] != b"070701":
            raise Error(f"{path}: no newc header at offset {at}")
        f = [int(data[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, rmaj, rmin, namesize = f[1], f[6], f[9], f[10], f[11]
        at += 110
        name = data[at : at + namesize - 1].decode()
        at += namesize
        at += -at % 4
        body = data[at : at + size]
        at += size
        at += -at % 4
        if name == "TRAILER!!!":
            return
        kind = stat.filemode(mode)
        extra = ""
        if stat.S_ISLNK(mode):
            extra = " -> " + body.decode()
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            extra = f" {rmaj}:{rmin}"
        print(f"{kind} {size:>9} {name}{extra}")


def main(argv):
    try:
        if len(argv) >= 3 and argv[1] == "modules":
            for rel in load_order(argv[2], argv[3:]):
                print(rel)
        elif len(argv) == 4 and argv[1] == "pack":
            pack(argv[2], argv[3])
        elif len(argv) == 3 and argv[1] == "list":
            listing(argv[2])
        else:
            print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
            return 2
    except BrokenPipeError:
        return 0
    except (Error, OSError, ValueError, struct.error) as e:
        print(f"initramfs.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
