/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: IDT.  Every exception vector (0-31) prints what
 * happened on COM1 and halts the CPU, so a fault shows up as a line of text
 * instead of a triple fault.  Vectors 32-255 are device interrupts, handled
 * by interrupt_entry() in irq.c (interrupts are only enabled while the BSP
 * waits in sti; hlt).
 */
#include "guest.h"

struct idt_gate {
	u16 off_lo;
	u16 sel;
	u8 ist;
	u8 attr;
	u16 off_mid;
	u32 off_hi;
	u32 zero;
} __attribute__((packed));

extern char isr_stubs[];

static struct idt_gate idt[256] __attribute__((aligned(16)));

static const char *const exc_names[32] = {
	"#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM",
	"#DF", "CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
	"#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23",
	"#24", "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31",
};

void idt_init(void)
{
	for (u32 v = 0; v < 256; v++) {
		u64 a = (u64)isr_stubs + (u64)v * 16;
		idt[v].off_lo = (u16)a;
		idt[v].sel = SEL_CODE64;
		idt[v].ist = 0;
		idt[v].attr = 0x8e;   /* present, DPL 0, 64-bit interrupt gate */
		idt[v].off_mid = (u16)(a >> 16);
		idt[v].off_hi = (u32)(a >> 32);
		idt[v].zero = 0;
	}
	idt_load();
}

void idt_load(void)
{
	struct {
		u16 limit;
		u64 base;
	} __attribute__((packed)) ptr = { sizeof(idt) - 1, (u64)idt };
	__asm__ volatile("lidt %0" : : "m"(ptr));
}

static volatile u32 faults;

void exception_handler(struct trap_frame *f)
{
	u64 cr2;
	__asm__ volatile("mov %%cr2, %0" : "=r"(cr2));
	/* A recursive fault (e.g. the serial port itself faulting) just halts. */
	if (__atomic_fetch_add(&faults, 1, __ATOMIC_RELAXED) > 8)
		halt_forever();
	int locked = spin_trylock_bounded(&print_lock, 1000000);
	kprintf_nolock("\nexception: vector %u (%s) error 0x%lx rip 0x%016lx cr2 0x%lx rsp 0x%lx apic id %u\n",
		       (u32)f->vector, f->vector < 32 ? exc_names[f->vector] : "interrupt",
		       f->error, f->rip, cr2, f->rsp, this_apic_id());
	kprintf_nolock("exception: halted\n");
	if (locked)
		spin_unlock(&print_lock);
	halt_forever();
}
