#!/usr/bin/env bash
# Fetches Debian's current amd64 Linux kernel for the VMM's Linux boot tests.
#
#   ./scripts/fetch-linux.sh
#
# Output, in ${KVMKIT_LINUX_DIR:-<repo>/target/linux}:
#   bzImage   /boot/vmlinuz-* of the package (64-bit Linux boot protocol)
#   vmlinux   the ELF kernel extracted from it (booted through its PVH note)
#   VERSION   release=, package=, version=, pvh_entry= lines
# and on stdout `bzImage=PATH`, `vmlinux=PATH`, `version=RELEASE`.
#
# Cached: when the three files are there and vmlinux checks out, nothing is
# downloaded (KVMKIT_LINUX_REFRESH=1 fetches again). Concurrent runs are
# serialised with flock. The package is resolved from the linux-image-amd64
# metapackage's dependency; the -unsigned variant is preferred (same
# vmlinuz, no signature). `apt-get update` runs only when apt does not know
# the package. Needs apt-get, apt-cache, dpkg-deb, python3, flock; a
# zstd/lz4/lzo-compressed payload also needs that tool.
set -euo pipefail

die() {
    echo "fetch-linux: $*" >&2
    exit 1
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
OUT="${KVMKIT_LINUX_DIR:-$REPO/target/linux}"
EXTRACT="$HERE/extract-vmlinux.py"
PYTHON="$(command -v python3 || true)"
[[ -n "$PYTHON" ]] || die "python3 is needed to extract vmlinux (apt-get install -y python3)"
for tool in apt-get apt-cache dpkg-deb flock; do
    command -v "$tool" >/dev/null || die "$tool is needed (this script expects a Debian host)"
done

mkdir -p "$OUT" || die "cannot create $OUT"
exec 9>"$OUT/.lock"
flock 9

report() {
    echo "bzImage=$OUT/bzImage"
    echo "vmlinux=$OUT/vmlinux"
    echo "version=$(sed -n 's/^release=//p' "$OUT/VERSION")"
}

if [[ "${KVMKIT_LINUX_REFRESH:-0}" != 1 && -s "$OUT/bzImage" && -s "$OUT/vmlinux" && -s "$OUT/VERSION" ]] &&
    "$PYTHON" "$EXTRACT" check-pvh "$OUT/vmlinux" >/dev/null 2>&1; then
    report
    exit 0
fi

# The image package the metapackage currently depends on.
resolve() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1
}
known() {
    [[ -n "$(apt-cache show --no-all-versions "$1" 2>/dev/null)" ]]
}
PKG="$(resolve)"
if [[ -z "$PKG" ]] || ! known "$PKG"; then
    echo "fetch-linux: linux-image-amd64 not resolvable; running apt-get update" >&2
    apt-get update -qq >&2 || die "apt-get update failed"
    PKG="$(resolve)"
fi
[[ -n "$PKG" ]] || die "cannot resolve linux-image-amd64 to a linux-image-<version>-amd64 package with apt-cache"
RELEASE="${PKG#linux-image-}"
if known "$PKG-unsigned"; then
    PKG="$PKG-unsigned"
fi
known "$PKG" || die "apt does not know $PKG"
VERSION="$(apt-cache show --no-all-versions "$PKG" | sed -n 's/^Version: //p' | head -n 1)"

WORK="$(mktemp -d "$OUT/.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# apt-get download drops privileges to _apt when it can; let it write here.
chmod 0777 "$WORK"
echo "fetch-linux: downloading $PKG $VERSION" >&2
(cd "$WORK" && apt-get download -q "$PKG=$VERSION" >&2) || die "apt-get download $PKG=$VERSION failed"
DEB="$(ls "$WORK"/*.deb 2>/dev/null | head -n 1)"
[[ -n "$DEB" ]] || die "apt-get download produced no .deb in $WORK"
dpkg-deb -x "$DEB" "$WORK/root" || die "dpkg-deb -x $DEB failed"
VMLINUZ="$(ls "$WORK"/root/boot/vmlinuz-* 2>/dev/null | head -n 1)"
[[ -n "$VMLINUZ" ]] || die "$DEB has no /boot/vmlinuz-*"
[[ "$(head -c 518 "$VMLINUZ" | tail -c 4)" == HdrS ]] || die "$VMLINUZ is not a bzImage (no HdrS header)"

"$PYTHON" "$EXTRACT" extract "$VMLINUZ" "$WORK/vmlinux" || die "cannot extract vmlinux from $VMLINUZ"
ENTRY="$("$PYTHON" "$EXTRACT" check-pvh "$WORK/vmlinux")" || die "the vmlinux of $PKG has no PVH note"
if command -v readelf >/dev/null; then
    # A second opinion from binutils: the Xen note of type 0x12.
    readelf -n "$WORK/vmlinux" | grep -E '^[[:space:]]+Xen[[:space:]]+0x[0-9a-f]+[[:space:]].*(0x00000012|PHYS32_ENTRY)' >&2 ||
        die "readelf -n finds no Xen PHYS32_ENTRY note in the vmlinux of $PKG"
fi

cp "$VMLINUZ" "$WORK/bzImage"
mv -f "$WORK/bzImage" "$OUT/bzImage"
mv -f "$WORK/vmlinux" "$OUT/vmlinux"
printf 'release=%s\npackage=%s\nversion=%s\n%s\n' "$RELEASE" "$PKG" "$VERSION" "$ENTRY" >"$OUT/VERSION.tmp"
mv -f "$OUT/VERSION.tmp" "$OUT/VERSION"
report
