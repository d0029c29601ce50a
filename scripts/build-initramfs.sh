#!/usr/bin/env bash
# Builds the initramfs of the VMM's Linux virtio tests (vmm-reference/tests/
# linux_virtio.rs) for Debian's kernel that scripts/fetch-linux.sh fetches.
#
#   ./scripts/build-initramfs.sh OUT_DIR
#
# Writes OUT_DIR/initramfs.cpio.gz (newc, gzip) and prints its path on stdout.
# It holds:
#   /bin/busybox    Debian's busybox-static (the package is installed with
#                   apt-get when missing), with links for the applets /init uses
#   /lib/modules/   the kernel's virtio_mmio, virtio_blk, virtio_net and ext4
#                   modules and what they depend on, uncompressed, and
#                   `order`, the load order (dependencies first)
#   /init           mounts proc, sys and devtmpfs, loads the modules, runs the
#                   test the kernel command line names, then powers off:
#     kvmkit.test=disk     mount /dev/vda (ext4) read-write, print
#                          `KVMKIT-DISK: <first line of /hello.txt>`, write
#                          /from-guest.txt (`from the guest: <that line>`),
#                          umount, print `KVMKIT-DISK-DONE`
#     kvmkit.test=disk-ro  mount /dev/vda read-only, print the same line and
#                          `KVMKIT-DISK-RO: <1 if the kernel sees vda read-only>`,
#                          try to write (`KVMKIT-DISK-WRITE-REFUSED` or
#                          `KVMKIT-DISK-WRITE-ALLOWED`), print `KVMKIT-DISK-DONE`
#     kvmkit.test=net      `KVMKIT-NET-MAC: <eth0's MAC>`, eth0 up as
#                          192.0.2.2/24, `ping -c 3 -W 5 192.0.2.1`, then
#                          `KVMKIT-PING-OK` or `KVMKIT-PING-FAIL`
#   Before the test, one `KVMKIT-VIRTIO: virtioN device 0xNNNN on PATH` line
#   per virtio device (PATH the parent device in sysfs: LNRO0005:NN when the
#   ACPI DSDT described it) and the LNRO0005/virtio lines of /proc/iomem
#   (`KVMKIT-IOMEM: d0000000-d00001ff : LNRO0005:00`).
#   A failure to set up prints `KVMKIT-ERROR: <what>`; /init always ends
#   with `poweroff -f` (reboot(2) POWER_OFF, ACPI S5).
#
# The modules come from the same linux-image .deb as the kernel (package and
# version from fetch-linux.sh's VERSION file). The .deb has no modules.dep
# (depmod writes it at install time): scripts/initramfs.py reads the
# dependencies from the modules' .modinfo sections, and also writes the cpio
# (no cpio tool or root needed for /dev/console).
#
# Cached in ${KVMKIT_LINUX_DIR:-<repo>/target/linux}: the needed modules,
# uncompressed, in modules-<package version>/ (rebuilt when the version or
# the module list changes; the .deb is deleted once they are extracted).
# Serialised with flock. Needs bash, python3, apt-get, dpkg-deb, flock, gzip;
# xz or zstd only if the kernel's modules are compressed that way.
set -euo pipefail

die() {
    echo "build-initramfs: $*" >&2
    exit 1
}

[[ $# -eq 1 ]] || die "usage: $0 OUT_DIR"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
LINUX="${KVMKIT_LINUX_DIR:-$REPO/target/linux}"
HELPER="$HERE/initramfs.py"
MODULES=(virtio_mmio virtio_blk virtio_net ext4)
APPLETS=(sh cat echo mount umount mkdir insmod ip ping sync poweroff sleep seq grep head uname readlink)
BUSYBOX=/bin/busybox

for tool in python3 apt-get dpkg-deb dpkg-query flock gzip; do
    command -v "$tool" >/dev/null || die "$tool is needed (this script expects a Debian host)"
done
mkdir -p "$1" || die "cannot create $1"
OUT="$(cd "$1" && pwd)"

# The kernel (cached by fetch-linux.sh) and its package.
bash "$HERE/fetch-linux.sh" >/dev/null || die "scripts/fetch-linux.sh failed"
field() { sed -n "s/^$1=//p" "$LINUX/VERSION" | head -n 1; }
RELEASE="$(field release)"
PKG="$(field package)"
VERSION="$(field version)"
[[ -n "$RELEASE" && -n "$PKG" && -n "$VERSION" ]] || die "$LINUX/VERSION lacks release=, package= or version="

exec 9>"$LINUX/.initramfs.lock"
flock 9

# busybox-static: a statically linked busybox runs without any library in
# the initramfs.
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
    echo "build-initramfs: installing Debian's busybox-static with apt-get" >&2
    SUDO=()
    [[ $(id -u) -ne 0 ]] && SUDO=(sudo)
    if ! DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends busybox-static >&2; then
        "${SUDO[@]}" apt-get update -q >&2 || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends busybox-static >&2 ||
            die "apt-get install busybox-static failed"
    fi
fi
[[ -x $BUSYBOX ]] || die "$BUSYBOX missing although busybox-static is installed"
if command -v file >/dev/null; then
    file -L "$BUSYBOX" | grep -q 'statically linked' || die "$BUSYBOX is not statically linked"
fi
HAVE=" $("$BUSYBOX" --list | tr '\n' ' ') "
for a in "${APPLETS[@]}"; do
    [[ "$HAVE" == *" $a "* ]] || die "$BUSYBOX has no $a applet"
done

# The modules, extracted once per package version.
MODCACHE="$LINUX/modules-$VERSION"
if [[ ! -s "$MODCACHE/order" || "$(cat "$MODCACHE/roots" 2>/dev/null)" != "${MODULES[*]}" ]]; then
    DEB="$LINUX/${PKG}_${VERSION}_amd64.deb"
    if [[ ! -s "$DEB" ]]; then
        rm -f "$LINUX"/linux-image-*.deb
        DL="$(mktemp -d "$LINUX/.deb.XXXXXX")"
        chmod 0777 "$DL" # apt-get download may drop privileges to _apt
        echo "build-initramfs: downloading $PKG $VERSION for its modules" >&2
        (cd "$DL" && apt-get download -q "$PKG=$VERSION" >&2) || {
            rm -rf "$DL"
            die "apt-get download $PKG=$VERSION failed"
        }
        mv -f "$DL"/*.deb "$DEB" || die "apt-get download produced no .deb"
        rm -rf "$DL"
    fi
    WORK="$(mktemp -d "$LINUX/.modules.XXXXXX")"
    trap 'rm -rf "$WORK"' EXIT
    dpkg-deb -x "$DEB" "$WORK/root" || die "dpkg-deb -x $DEB failed"
    MODDIR="$WORK/root/lib/modules/$RELEASE"
    [[ -d "$MODDIR" ]] || die "$DEB has no lib/modules/$RELEASE"
    mapfile -t ORDER < <(python3 "$HELPER" modules "$MODDIR" "${MODULES[@]}") ||
        die "cannot resolve the modules' dependencies"
    [[ ${#ORDER[@]} -gt 0 ]] || die "no modules resolved"
    mkdir -p "$WORK/out"
    : >"$WORK/out/order"
    for rel in "${ORDER[@]}"; do
        name="$(basename "$rel")"
        case "$name" in
        *.ko) cp "$MODDIR/$rel" "$WORK/out/$name" ;;
        *.ko.xz)
            command -v xz >/dev/null || die "xz is needed for $name (apt-get install xz-utils)"
            xz -dc "$MODDIR/$rel" >"$WORK/out/${name%.xz}"
            name="${name%.xz}"
            ;;
        *.ko.zst)
            command -v zstd >/dev/null || die "zstd is needed for $name (apt-get install zstd)"
            zstd -dcq "$MODDIR/$rel" >"$WORK/out/${name%.zst}"
            name="${name%.zst}"
            ;;
        *.ko.gz)
            gzip -dc "$MODDIR/$rel" >"$WORK/out/${name%.gz}"
            name="${name%.gz}"
            ;;
        *) die "unexpected module file $rel" ;;
        esac
        echo "$name" >>"$WORK/out/order"
    done
    echo "${MODULES[*]}" >"$WORK/out/roots"
    rm -rf "$LINUX"/modules-*
    mv "$WORK/out" "$MODCACHE"
    rm -rf "$WORK" "$DEB"
    trap - EXIT
fi

# The tree, then the archive.
STAGE="$(mktemp -d "$OUT/.stage.XXXXXX")"
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,sbin,dev,proc,sys,mnt,tmp,lib/modules}
cp "$BUSYBOX" "$STAGE/bin/busybox"
for a in "${APPLETS[@]}"; do
    ln -s busybox "$STAGE/bin/$a"
done
cp "$MODCACHE"/*.ko "$MODCACHE/order" "$STAGE/lib/modules/"
echo "$RELEASE" >"$STAGE/lib/modules/release"

cat >"$STAGE/init" <<'EOF'
#!/bin/busybox sh
# kvmkit's Linux virtio test init (scripts/build-initramfs.sh).
export PATH=/bin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev

finish() {
    sync
    echo "KVMKIT-POWEROFF"
    poweroff -f
    # Not reached; if it is, /init's exit panics and panic=-1 reboots.
    sleep 5
    exit 1
}

error() {
    echo "KVMKIT-ERROR: $*"
    finish
}

echo "KVMKIT-INIT: Linux $(uname -r)"
for m in $(cat /lib/modules/order); do
    insmod "/lib/modules/$m" || error "insmod $m failed"
done
echo "KVMKIT-MODULES:" $(cat /lib/modules/order)
# Where the virtio devices came from: a device the ACPI DSDT describes
# (LNRO0005) is the platform device LNRO0005:NN; one from the command line
# (virtio_mmio.device=) would be virtio-mmio.N.
for d in /sys/bus/virtio/devices/*; do
    [ -e "$d" ] || continue
    parent="$(readlink -f "$d/..")"
    echo "KVMKIT-VIRTIO: ${d##*/} device $(cat "$d/device") on ${parent#/sys}"
done
grep -i -e LNRO0005 -e virtio /proc/iomem | while read -r line; do
    echo "KVMKIT-IOMEM: $line"
done

TEST=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    kvmkit.test=*) TEST="${arg#kvmkit.test=}" ;;
    esac
done

# Waits up to 10 s for a path to appear (the drivers probe as they load,
# but give them time).
wait_for() {
    for i in $(seq 1 100); do
        [ -e "$1" ] && return 0
        sleep 0.1
    done
    return 1
}

disk() {
    mode="$1"
    wait_for /dev/vda || error "no /dev/vda"
    if [ "$mode" = ro ]; then
        mount -t ext4 -o ro /dev/vda /mnt || error "mount -o ro /dev/vda failed"
    else
        mount -t ext4 /dev/vda /mnt || error "mount /dev/vda failed"
    fi
    content="$(head -n 1 /mnt/hello.txt)" || error "no /hello.txt on vda"
    echo "KVMKIT-DISK: $content"
    if [ "$mode" = ro ]; then
        echo "KVMKIT-DISK-RO: $(cat /sys/block/vda/ro)"
        if (echo "from the guest: $content" >/mnt/from-guest.txt) 2>/dev/null; then
            echo "KVMKIT-DISK-WRITE-ALLOWED"
        else
            echo "KVMKIT-DISK-WRITE-REFUSED"
        fi
    else
        echo "from the guest: $content" >/mnt/from-guest.txt || error "write /mnt/from-guest.txt failed"
        sync
    fi
    umount /mnt || error "umount /mnt failed"
    echo "KVMKIT-DISK-DONE"
}

net() {
    wait_for /sys/class/net/eth0 || error "no eth0"
    echo "KVMKIT-NET-MAC: $(cat /sys/class/net/eth0/address)"
    ip link set lo up
    ip link set eth0 up || error "ip link set eth0 up failed"
    ip addr add 192.0.2.2/24 dev eth0 || error "ip addr add failed"
    if ping -c 3 -W 5 192.0.2.1; then
        echo "KVMKIT-PING-OK"
    else
        echo "KVMKIT-PING-FAIL"
    fi
}

case "$TEST" in
disk) disk rw ;;
disk-ro) disk ro ;;
net) net ;;
"") echo "KVMKIT-ERROR: no kvmkit.test= on the command line" ;;
*) echo "KVMKIT-ERROR: unknown kvmkit.test=$TEST" ;;
esac
finish
EOF
chmod 0755 "$STAGE/init"

python3 "$HELPER" pack "$STAGE" "$OUT/initramfs.cpio.gz" || die "cannot write $OUT/initramfs.cpio.gz"
rm -rf "$STAGE"
trap - EXIT
echo "$OUT/initramfs.cpio.gz"
