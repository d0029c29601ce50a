/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: memory layout and protocol constants.
 *
 * Included from both C and assembly, so only #defines here.  The Rust
 * crate (src/lib.rs) mirrors the public ones; keep them in sync.
 */
#ifndef KVMKIT_TEST_GUEST_LAYOUT_H
#define KVMKIT_TEST_GUEST_LAYOUT_H

/* The image is linked (virtual == physical) at 1 MiB. */
#define LOAD_ADDR 0x100000

/* Real-mode AP start-up trampoline, copied here before the SIPIs. */
#define TRAMPOLINE_ADDR 0x8000
#define SIPI_VECTOR (TRAMPOLINE_ADDR >> 12)

/* Mailbox page the host can read (e.g. across a live migration). */
#define MAILBOX_ADDR 0x9000
#define MAILBOX_COUNTER (MAILBOX_ADDR + 0x00)  /* u64: dirty counter */
#define MAILBOX_MAGIC (MAILBOX_ADDR + 0x08)    /* u64: MAILBOX_MAGIC_VALUE once the shell runs */
#define MAILBOX_CPUS (MAILBOX_ADDR + 0x10)     /* u64: CPUs online */
#define MAILBOX_DIRTY_PAGES (MAILBOX_ADDR + 0x18) /* u64: pages of the last dirty run */
/* "kvmkitTG" read as a little-endian u64 */
#define MAILBOX_MAGIC_VALUE 0x475474696b6d766bULL

/* Buffer written by the `dirty` command. */
#define DIRTY_BUFFER_ADDR 0x1000000
#define DIRTY_DEFAULT_PAGES 256

/*
 * virtio-mmio queues and buffers: one 32 KiB slot per device (at most
 * VIRTIO_MAX_DEVS), at a fixed address at the end of the image (a NOLOAD
 * section: not zeroed at boot, each slot is cleared when its device is
 * set up).  Inside a slot: queue 0 at +0x0000 and queue 1 at +0x1000
 * (descriptor table +0x000, available ring +0x100, used ring +0x200;
 * at most VIRTIO_QUEUE_SIZE entries), the request page at +0x2000
 * (virtio-blk: header +0x000, status byte +0x010, data +0x200;
 * virtio-net: the transmit buffer), virtio-net receive buffers at
 * +0x4000 (8 x 2 KiB).
 */
#define VIRTIO_AREA_ADDR 0x1c0000
#define VIRTIO_SLOT_SIZE 0x8000
#define VIRTIO_MAX_DEVS 8
#define VIRTIO_QUEUE_SIZE 16

/* Our own page tables identity map [0, 4 GiB) with 2 MiB pages. */
#define IDENTITY_MAP_END 0x100000000ULL

#define MAX_CPUS 64
#define BSP_STACK_SIZE 0x4000
#define AP_STACK_SIZE 0x2000

/* Values of the first argument to kmain(). */
#define BOOT_KIND_LINUX64 1
#define BOOT_KIND_PVH 2

/* GDT selectors (shared by the BSP and the APs after start-up). */
#define SEL_CODE64 0x08
#define SEL_DATA 0x10
#define SEL_CODE32 0x18

#endif
