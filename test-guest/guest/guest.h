/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: shared declarations.
 *
 * Freestanding x86_64 code: no libc, no FPU/SSE.  Interrupts are off except
 * while the BSP waits in sti; hlt (irq_wait, the shell's idle loop).
 * Every loop over data that came from the host is bounded.
 */
#ifndef KVMKIT_TEST_GUEST_H
#define KVMKIT_TEST_GUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "layout.h"

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;

#ifndef KVMKIT_TG_VERSION
#define KVMKIT_TG_VERSION "0.0.0"
#endif

#define BANNER "kvmkit test guest"
#define PROMPT "kvmkit> "

/* Memory types as used by both e820 and the PVH memory map. */
#define E820_USABLE 1
#define E820_RESERVED 2
#define E820_ACPI 3
#define E820_NVS 4
#define E820_UNUSABLE 5

#define MAX_MEM_ENTRIES 128
#define MAX_CMDLINE 2048

/* Everything the boot protocol told us, copied into our own memory. */
struct mem_entry {
	u64 addr;
	u64 size;
	u32 type;
};

struct bootinfo {
	u32 kind;                /* BOOT_KIND_* */
	u32 nr_mem;
	struct mem_entry mem[MAX_MEM_ENTRIES];
	char cmdline[MAX_CMDLINE];
	u64 rsdp;                /* 0 if the boot protocol gave none */
};

extern struct bootinfo bootinfo;

/* ACPI facts needed after boot (the tables are not touched again). */
struct gas {
	u8 space;   /* 0 = system memory, 1 = system I/O */
	u8 width;   /* register bit width */
	u64 addr;
};

struct acpi_info {
	u64 rsdp;
	u64 madt;
	u64 fadt;
	u64 dsdt;
	u64 mptable;           /* MP configuration table, if used */
	u32 pm1a_cnt;          /* I/O port, 0 if none */
	u32 pm1a_evt;          /* I/O port of PM1a status (enable at +len/2), 0 if none */
	u8 pm1_evt_len;        /* bytes: status and enable, half each */
	u8 fixed_pwrbtn;       /* FADT PWR_BUTTON clear: a fixed-feature power button */
	u16 sci_irq;           /* FADT SCI_INT (an ISA IRQ, or a GSI above 15) */
	struct gas sleep_ctl;  /* HW-reduced ACPI sleep control register */
	struct gas reset_reg;
	u8 reset_val;
	u8 have_reset;
	u8 have_s5;
	u8 s5_typ;             /* SLP_TYPa for S5 */
};

extern struct acpi_info acpi;

#define MAX_IOAPICS 4
#define MAX_ISOS 16
struct ioapic {
	u64 addr;
	u32 gsi_base;
	u32 pins;      /* filled in by irq_init from the version register */
	u8 id;
};
struct iso {           /* MADT Interrupt Source Override (or MP table) */
	u8 irq;        /* ISA IRQ */
	u16 flags;     /* MPS INTI flags */
	u32 gsi;
};
extern struct ioapic ioapics[MAX_IOAPICS];
extern u32 nr_ioapics;
extern struct iso isos[MAX_ISOS];
extern u32 nr_isos;

/* The CPUs listed by the firmware tables; index 0 is always the BSP. */
struct cpu {
	u32 apic_id;
	volatile u32 online;
};

extern struct cpu cpus[MAX_CPUS];
extern u32 cpus_listed;          /* entries used in cpus[] */
extern volatile u32 cpus_online;

/* ---- port I/O, MSRs, CPUID, MMIO ---- */
static inline void outb(u16 port, u8 v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline void outw(u16 port, u16 v)
{
	__asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port));
}
static inline u16 inw(u16 port)
{
	u16 v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}
static inline void outl(u16 port, u32 v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}
static inline u64 rdmsr(u32 msr)
{
	u32 lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((u64)hi << 32) | lo;
}
static inline void wrmsr(u32 msr, u64 v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)) : "memory");
}
static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
	__asm__ volatile("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}
static inline void cpu_relax(void)
{
	__asm__ volatile("pause" : : : "memory");
}
static inline u32 mmio_read32(u64 addr)
{
	return *(volatile u32 *)addr;
}
static inline void mmio_write32(u64 addr, u32 v)
{
	*(volatile u32 *)addr = v;
}
static inline void mmio_write8(u64 addr, u8 v)
{
	*(volatile u8 *)addr = v;
}
static inline __attribute__((noreturn)) void halt_forever(void)
{
	for (;;)
		__asm__ volatile("cli; hlt" : : : "memory");
}

/* Guest-physical memory below 4 GiB is identity mapped; a range is
 * accessible if it lies entirely below that. */
static inline int phys_ok(u64 addr, u64 len)
{
	return addr != 0 && len <= IDENTITY_MAP_END && addr <= IDENTITY_MAP_END - len;
}

/* ---- lib.c ---- */
void *memcpy(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);

void spin_lock(volatile u32 *lock);
int spin_trylock_bounded(volatile u32 *lock, u32 spins);
void spin_unlock(volatile u32 *lock);
void delay(u32 loops);

void serial_init(void);
void serial_write(const char *s, size_t n);
int serial_getc(void);  /* -1 if nothing is waiting */
void serial_enable_rx_irq(void);   /* IER = receive data available */
void serial_irq(void *arg);        /* drains the receiver into a ring */

extern volatile u32 print_lock;
/* printf subset: %s %c %d %u %x %p, '0' flag, width, 'l'/'ll' */
void kprintf(const char *fmt, ...);
void kprintf_nolock(const char *fmt, ...);
int parse_u64(const char *s, int base, u64 *out);

/* ---- idt.c ---- */
struct trap_frame {
	u64 r15, r14, r13, r12, r11, r10, r9, r8;
	u64 rbp, rdi, rsi, rdx, rcx, rbx, rax;
	u64 vector, error;
	u64 rip, cs, rflags, rsp, ss;
};

void idt_init(void);
void idt_load(void);
__attribute__((noreturn)) void exception_handler(struct trap_frame *f);

/* ---- irq.c: IOAPIC, local APIC timer and EOI, interrupt waits ---- */
#define VEC_COM1 0x24
#define VEC_SCI 0x29               /* the ACPI SCI (ISA IRQ 9 on a PC) */
#define VEC_VIRTIO_BASE 0x40       /* + virtio device index */
#define VEC_TIMER 0xf0
#define VEC_SPURIOUS 0xff
#define IRQ_TICK_MS 10             /* nominal local APIC timer period */

extern int irq_enabled;            /* 1 once the timer was seen to interrupt */
extern volatile u32 timer_ticks, com1_irqs, other_irqs, spurious_irqs;
void interrupt_entry(struct trap_frame *f);
void irq_init(void);
void irq_set_handler(u32 vector, void (*fn)(void *), void *arg);
/* Route ISA IRQ / GSI `irq` to `vector` on the BSP.  is_gsi: `irq` is
 * already a GSI (else an ISA IRQ, mapped through the MADT overrides).
 * flags: MPS INTI flags (polarity bits 1:0, trigger bits 3:2, 0 = bus
 * default: edge, active high).  Returns the GSI, or -1. */
int irq_route(u32 irq, int is_gsi, u16 flags, u32 vector);
/* Waits (interrupts on, hlt) until cond(arg) is true or max_ticks timer
 * ticks have passed.  Returns 1 if the condition became true. */
int irq_wait(int (*cond)(void *), void *arg, u32 max_ticks);
/* One sti; hlt; cli if interrupts work, else a short pause loop. */
void irq_idle(void);
const char *cmdline_find(const char *param);   /* value after param, or 0 */

/* ---- bootinfo.c ---- */
void bootinfo_collect(u32 kind, u64 info);
void print_memmap(void);
const char *boot_kind_name(u32 kind);
int mem_range_has_type(u64 addr, u64 len, u32 type, int any_type);

/* ---- acpi.c ---- */
void acpi_init(void);
int acpi_poweroff(void);
void acpi_reset(void);
/* Routes the SCI and enables the fixed power button (after irq_init). */
void acpi_sci_init(void);
extern volatile u32 sci_irqs;

/* ---- smp.c ---- */
u32 this_apic_id(void);
void smp_boot(void);
void lapic_reg_write(u32 reg, u32 v);
u32 lapic_reg_read(u32 reg);
int lapic_is_x2apic(void);
u64 lapic_base(void);

/* ---- virtio.c ---- */
/* A transport found in the DSDT (LNRO0005): base, size, GSI, INTI flags. */
void virtio_add_acpi(u64 base, u64 size, u32 gsi, u16 flags);
void virtio_init(void);
void virtio_list(void);
void cmd_blk(char *args);
void cmd_net(char *args);
void cmd_irqs(void);

/* ---- shell.c ---- */
void shell_run_line(char *line);
void shell_autorun(void);
__attribute__((noreturn)) void shell_loop(void);
void do_poweroff(void);
void do_reboot(void);

#endif
