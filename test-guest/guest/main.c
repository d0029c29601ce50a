/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: the BSP's C entry point.
 */
#include "guest.h"

__attribute__((noreturn)) void kmain(u32 kind, u64 info);

void kmain(u32 kind, u64 info)
{
	idt_init();
	serial_init();
	kprintf("\n" BANNER " " KVMKIT_TG_VERSION " (boot: %s)\n", boot_kind_name(kind));
	/* Copy the boot information first: low memory is reused below. */
	bootinfo_collect(kind, info);
	print_memmap();
	kprintf("cmdline: %s\n", bootinfo.cmdline);

	/* ACPI / MP tables are read once, before low memory is written. */
	acpi_init();

	volatile u64 *mb = (volatile u64 *)(u64)MAILBOX_ADDR;
	if (!mem_range_has_type(MAILBOX_ADDR, 0x1000, E820_USABLE, 0))
		kprintf("warning: mailbox page 0x%x is not usable RAM\n", MAILBOX_ADDR);
	mb[0] = 0;  /* counter */
	mb[1] = 0;  /* magic: set when the shell is ready */
	mb[2] = 0;
	mb[3] = 0;

	smp_boot();
	irq_init();
	acpi_sci_init();
	virtio_init();

	*(volatile u64 *)(u64)MAILBOX_CPUS = cpus_online;
	*(volatile u64 *)(u64)MAILBOX_MAGIC = MAILBOX_MAGIC_VALUE;

	shell_autorun();
	shell_loop();
}
