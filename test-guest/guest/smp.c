/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: bring up the APs with INIT / SIPI / SIPI.
 *
 * The trampoline (boot.S) is copied to TRAMPOLINE_ADDR; each AP walks
 * real mode -> protected mode -> long mode on the BSP's page tables, takes
 * a stack slot and calls ap_main(), which reports and parks the CPU.
 */
#include "guest.h"

#define MSR_APIC_BASE 0x1b
#define APIC_BASE_ENABLE (1u << 11)
#define APIC_BASE_X2APIC (1u << 10)
#define APIC_ID 0x20
#define APIC_SVR 0xf0
#define APIC_ICR_LO 0x300
#define APIC_ICR_HI 0x310
#define MSR_X2APIC_ID 0x802
#define MSR_X2APIC_SVR 0x80f
#define MSR_X2APIC_ICR 0x830
#define ICR_BUSY (1u << 12)
#define ICR_INIT 0x00004500    /* INIT, level assert */
#define ICR_SIPI 0x00004600    /* start-up, level assert */

/*
 * Loop counts, not time (the guest may run in KVM's instruction emulator at
 * a few million instructions per second).  AP_WAIT_LOOPS iterations take
 * about 25 s in the emulator and well under a second on hardware; it only
 * matters when an AP never reports.
 */
#define IPI_DELAY 2000
#define AP_WAIT_LOOPS 5000000u

extern char trampoline_start[], trampoline_end[];

static u64 lapic;       /* xAPIC MMIO base */
static int x2apic;

/*
 * The local APIC ID from the APIC itself (the MADT lists those), not from
 * CPUID, whose initial APIC ID field a VMM may leave unset.
 */
u32 this_apic_id(void)
{
	u64 base = rdmsr(MSR_APIC_BASE);
	if (base & APIC_BASE_ENABLE) {
		if (base & APIC_BASE_X2APIC)
			return (u32)rdmsr(MSR_X2APIC_ID);
		u64 mmio = base & 0x000ffffffffff000ull;
		if (phys_ok(mmio, 0x1000))
			return mmio_read32(mmio + APIC_ID) >> 24;
	}
	u32 a, b, c, d;
	cpuid(1, 0, &a, &b, &c, &d);
	return b >> 24;
}

static void lapic_write(u32 reg, u32 v)
{
	mmio_write32(lapic + reg, v);
}

static u32 lapic_read(u32 reg)
{
	return mmio_read32(lapic + reg);
}

/* Local APIC register access for irq.c: xAPIC MMIO or the x2APIC MSR
 * 0x800 + reg / 16.  Valid after smp_boot() (apic_enable). */
void lapic_reg_write(u32 reg, u32 v)
{
	if (x2apic)
		wrmsr(0x800 + (reg >> 4), v);
	else
		lapic_write(reg, v);
}

u32 lapic_reg_read(u32 reg)
{
	if (x2apic)
		return (u32)rdmsr(0x800 + (reg >> 4));
	return lapic_read(reg);
}

int lapic_is_x2apic(void)
{
	return x2apic;
}

u64 lapic_base(void)
{
	return lapic;
}

static void send_ipi(u32 apic_id, u32 icr)
{
	if (x2apic) {
		wrmsr(MSR_X2APIC_ICR, ((u64)apic_id << 32) | icr);
		return;
	}
	lapic_write(APIC_ICR_HI, apic_id << 24);
	lapic_write(APIC_ICR_LO, icr);
	for (u32 i = 0; i < 10000 && (lapic_read(APIC_ICR_LO) & ICR_BUSY); i++)
		cpu_relax();
}

static void apic_enable(void)
{
	u64 base = rdmsr(MSR_APIC_BASE);
	if (!(base & APIC_BASE_ENABLE)) {
		base |= APIC_BASE_ENABLE;
		wrmsr(MSR_APIC_BASE, base);
	}
	x2apic = !!(base & APIC_BASE_X2APIC);
	lapic = base & 0x000ffffffffff000ull;
	if (!x2apic && !phys_ok(lapic, 0x1000))
		lapic = 0xfee00000;
	/* software-enable, spurious vector 0xff */
	if (x2apic)
		wrmsr(MSR_X2APIC_SVR, rdmsr(MSR_X2APIC_SVR) | 0x1ff);
	else
		lapic_write(APIC_SVR, lapic_read(APIC_SVR) | 0x1ff);
}

static int cpu_index(u32 apic_id)
{
	for (u32 i = 0; i < cpus_listed; i++)
		if (cpus[i].apic_id == apic_id)
			return (int)i;
	return -1;
}

/* Called by boot.S on each AP with its own stack. */
__attribute__((noreturn)) void ap_main(u32 slot);

void ap_main(u32 slot)
{
	(void)slot;
	idt_load();
	u32 id = this_apic_id();
	int idx = cpu_index(id);
	if (idx > 0) {
		kprintf("cpu %d: online (apic id %u)\n", idx, id);
		cpus[idx].online = 1;
		__atomic_fetch_add(&cpus_online, 1, __ATOMIC_SEQ_CST);
	} else {
		kprintf("cpu ?: apic id %u started but is not listed\n", id);
	}
	halt_forever();
}

void smp_boot(void)
{
	apic_enable();
	u32 bsp = this_apic_id();

	/* Make the BSP entry 0, adding it if the tables did not list it. */
	int bi = cpu_index(bsp);
	if (bi < 0) {
		if (cpus_listed >= MAX_CPUS)
			cpus_listed = MAX_CPUS - 1;
		bi = (int)cpus_listed++;
		cpus[bi].apic_id = bsp;
	}
	struct cpu tmp = cpus[0];
	cpus[0] = cpus[bi];
	cpus[bi] = tmp;

	kprintf("cpus: %u listed\n", cpus_listed);
	cpus[0].online = 1;
	cpus_online = 1;
	kprintf("cpu 0: online (apic id %u)\n", bsp);

	if (cpus_listed > 1) {
		if (!mem_range_has_type(TRAMPOLINE_ADDR, 0x1000, E820_USABLE, 0))
			kprintf("smp: warning: trampoline page 0x%x is not usable RAM\n", TRAMPOLINE_ADDR);
		memcpy((void *)(u64)TRAMPOLINE_ADDR, trampoline_start,
		       (size_t)(trampoline_end - trampoline_start));
		/* full barrier without SSE2's mfence */
		__asm__ volatile("lock orl $0, (%%rsp)" : : : "memory", "cc");

		for (u32 i = 1; i < cpus_listed; i++)
			send_ipi(cpus[i].apic_id, ICR_INIT);
		delay(IPI_DELAY);
		for (u32 i = 1; i < cpus_listed; i++)
			send_ipi(cpus[i].apic_id, ICR_SIPI | SIPI_VECTOR);
		delay(IPI_DELAY);
		for (u32 i = 1; i < cpus_listed; i++)
			if (!cpus[i].online)
				send_ipi(cpus[i].apic_id, ICR_SIPI | SIPI_VECTOR);

		/* bounded wait; the bound restarts whenever another AP reports */
		u32 seen = cpus_online;
		for (u32 n = 0; n < AP_WAIT_LOOPS && seen < cpus_listed; n++) {
			cpu_relax();
			if (cpus_online != seen) {
				seen = cpus_online;
				n = 0;
			}
		}
		if (cpus_online < cpus_listed) {
			for (u32 i = 1; i < cpus_listed; i++)
				if (!cpus[i].online)
					kprintf("smp: cpu %u (apic id %u) did not come up\n", i, cpus[i].apic_id);
		}
	}
	kprintf("smp: %u cpus online\n", cpus_online);
}
