/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: interrupts on the BSP.
 *
 * - the 8259 PICs are masked (their vectors would collide with ours);
 * - the I/O APICs come from the MADT (or the MP table; default 0xfec00000,
 *   GSI base 0); a device's redirection entry (0x10 + 2 * pin) gets its
 *   vector, fixed delivery, physical destination = the BSP's APIC id, the
 *   trigger mode and polarity it needs, unmasked.  ISA IRQs go through
 *   the Interrupt Source Overrides (e.g. IRQ 0 -> GSI 2);
 * - the local APIC is software-enabled by smp_boot (spurious vector 0xff);
 *   its timer runs periodically (vector 0xf0, nominally every 10 ms: count
 *   625000 at divide-by-16, for the 1 GHz APIC clock of KVM and QEMU) so
 *   that every sti; hlt wait wakes up and can be bounded by ticks;
 * - each handler ends with an EOI to the local APIC (0xfee000b0, or the
 *   x2APIC EOI MSR).
 *
 * Interrupts are enabled only inside irq_wait / irq_idle (sti; hlt; cli),
 * so handlers never interrupt a kprintf or a lock holder.  The timer is
 * checked at boot with interrupts on and a bounded pause loop: if no tick
 * arrives (no in-kernel irqchip, `kvmkit.noirq` on the command line),
 * nothing is routed and every wait polls with bounded loops instead.
 */
#include "guest.h"

#define APIC_EOI 0x0b0
#define APIC_LVT_TIMER 0x320
#define APIC_TIMER_INIT 0x380
#define APIC_TIMER_CUR 0x390
#define APIC_TIMER_DIV 0x3e0
#define LVT_MASKED (1u << 16)
#define LVT_PERIODIC (1u << 17)
#define TIMER_DIV_16 0x3
#define TIMER_COUNT 625000u          /* 10 ms at 1 GHz / 16 */
#define TIMER_CHECK_LOOPS 3000000u   /* ~1 s emulated, well under natively */
#define POLL_TICK_LOOPS 20000u       /* a "tick" when interrupts are not used */

#define IOAPIC_DEFAULT 0xfec00000ull
#define IOREGSEL 0x00
#define IOWIN 0x10
#define IOAPIC_VER 0x01
#define IOREDTBL(pin) (0x10 + 2 * (pin))

int irq_enabled;
volatile u32 timer_ticks, com1_irqs, other_irqs, spurious_irqs;

static struct {
	void (*fn)(void *);
	void *arg;
} handlers[256];

const char *cmdline_find(const char *param)
{
	const char *cl = bootinfo.cmdline;
	size_t n = strlen(param);
	const char *v = 0;
	for (u32 i = 0; cl[i]; i++)
		if ((i == 0 || cl[i - 1] == ' ') && !strncmp(cl + i, param, n))
			v = cl + i + n;
	return v;
}

void irq_set_handler(u32 vector, void (*fn)(void *), void *arg)
{
	if (vector < 32 || vector > 255)
		return;
	handlers[vector].arg = arg;
	handlers[vector].fn = fn;
}

static void lapic_eoi(void)
{
	lapic_reg_write(APIC_EOI, 0);
}

void interrupt_entry(struct trap_frame *f)
{
	u32 v = (u32)f->vector;
	if (v < 32)
		exception_handler(f);
	if (v == VEC_SPURIOUS) {
		spurious_irqs++;
		return;                   /* no EOI for the spurious vector */
	}
	if (v == VEC_TIMER)
		timer_ticks++;
	else if (handlers[v].fn)
		handlers[v].fn(handlers[v].arg);
	else
		other_irqs++;
	lapic_eoi();
}

/* ---- I/O APIC ---- */
static u32 ioapic_read(u64 base, u32 reg)
{
	mmio_write32(base + IOREGSEL, reg);
	return mmio_read32(base + IOWIN);
}

static void ioapic_write(u64 base, u32 reg, u32 v)
{
	mmio_write32(base + IOREGSEL, reg);
	mmio_write32(base + IOWIN, v);
}

int irq_route(u32 irq, int is_gsi, u16 flags, u32 vector)
{
	u32 gsi = irq;
	if (!irq_enabled)
		return -1;
	if (!is_gsi) {
		for (u32 i = 0; i < nr_isos; i++) {
			if (isos[i].irq == irq) {
				gsi = isos[i].gsi;
				if (!flags)
					flags = isos[i].flags;
				break;
			}
		}
	}
	for (u32 i = 0; i < nr_ioapics; i++) {
		struct ioapic *io = &ioapics[i];
		if (gsi < io->gsi_base || gsi - io->gsi_base >= io->pins)
			continue;
		u32 pin = gsi - io->gsi_base;
		u32 pol = flags & 3, trig = (flags >> 2) & 3;
		u32 lo = vector & 0xff;            /* fixed delivery, physical */
		if (pol == 3)
			lo |= 1u << 13;            /* active low */
		if (trig == 3)
			lo |= 1u << 15;            /* level */
		ioapic_write(io->addr, IOREDTBL(pin) + 1, cpus[0].apic_id << 24);
		ioapic_write(io->addr, IOREDTBL(pin), lo);
		return (int)gsi;
	}
	return -1;
}

/* ---- waiting ---- */
void irq_idle(void)
{
	if (irq_enabled) {
		/* sti's one-instruction shadow: an interrupt that is already
		 * pending is taken after hlt starts, so it still wakes us */
		__asm__ volatile("sti; hlt; cli" : : : "memory");
	} else {
		delay(POLL_TICK_LOOPS / 16);
	}
}

int irq_wait(int (*cond)(void *), void *arg, u32 max_ticks)
{
	if (irq_enabled) {
		u32 start = timer_ticks;
		for (;;) {
			if (cond(arg))
				return 1;
			if (timer_ticks - start >= max_ticks)
				return 0;
			__asm__ volatile("sti; hlt; cli" : : : "memory");
		}
	}
	for (u32 t = 0; t <= max_ticks; t++) {
		for (u32 i = 0; i < POLL_TICK_LOOPS; i += 1000) {
			if (cond(arg))
				return 1;
			delay(1000);
		}
	}
	return cond(arg);
}

/*
 * Interrupts on around a short pause loop, not a single instruction: TCG
 * only looks for interrupts between translation blocks.
 */
static int timer_check(void)
{
	u32 start = timer_ticks;
	for (u32 i = 0; i < TIMER_CHECK_LOOPS; i += 64) {
		__asm__ volatile("sti" : : : "memory");
		delay(64);
		__asm__ volatile("cli" : : : "memory");
		if (timer_ticks != start)
			return 1;
	}
	return 0;
}

void irq_init(void)
{
	if (cmdline_find("kvmkit.noirq")) {
		kprintf("irq: disabled (kvmkit.noirq), polling\n");
		return;
	}
	/* mask both 8259s: ICW-less OCW1 writes set the interrupt masks */
	outb(0x21, 0xff);
	outb(0xa1, 0xff);

	irq_set_handler(VEC_TIMER, 0, 0);
	lapic_reg_write(APIC_TIMER_DIV, TIMER_DIV_16);
	lapic_reg_write(APIC_LVT_TIMER, VEC_TIMER | LVT_PERIODIC);
	lapic_reg_write(APIC_TIMER_INIT, TIMER_COUNT);
	if (!timer_check()) {
		lapic_reg_write(APIC_LVT_TIMER, VEC_TIMER | LVT_MASKED);
		lapic_reg_write(APIC_TIMER_INIT, 0);
		kprintf("irq: local apic timer did not interrupt, polling\n");
		return;
	}
	irq_enabled = 1;

	if (!nr_ioapics) {
		ioapics[0].addr = IOAPIC_DEFAULT;
		ioapics[0].gsi_base = 0;
		nr_ioapics = 1;
	}
	for (u32 i = 0; i < nr_ioapics; i++) {
		u32 ver = ioapic_read(ioapics[i].addr, IOAPIC_VER);
		ioapics[i].pins = ver == 0xffffffff ? 0 : ((ver >> 16) & 0xff) + 1;
	}

	/* COM1 receive interrupt: ISA IRQ 4, edge */
	int gsi = irq_route(4, 0, 0, VEC_COM1);
	if (gsi >= 0) {
		irq_set_handler(VEC_COM1, serial_irq, 0);
		serial_enable_rx_irq();
	}
	kprintf("irq: lapic %s timer vector 0x%x", lapic_is_x2apic() ? "x2apic" : "xapic", VEC_TIMER);
	for (u32 i = 0; i < nr_ioapics; i++) {
		if (ioapics[i].pins)
			kprintf(", ioapic 0x%lx gsi %u-%u", ioapics[i].addr, ioapics[i].gsi_base,
				ioapics[i].gsi_base + ioapics[i].pins - 1);
		else
			kprintf(", ioapic 0x%lx absent", ioapics[i].addr);
	}
	if (gsi >= 0)
		kprintf(", com1 gsi %d vector 0x%x\n", gsi, VEC_COM1);
	else
		kprintf(", com1 polled\n");
}
