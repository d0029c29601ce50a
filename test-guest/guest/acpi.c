/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: ACPI (RSDP, XSDT/RSDT, MADT, FADT, DSDT _S5_) and the
 * MP table fallback.  Only what the guest needs: the list of CPUs and how to
 * power off / reset.  All tables are read once at boot; every loop is
 * bounded and every pointer checked against the 4 GiB identity map.
 */
#include "guest.h"

struct acpi_info acpi;
struct ioapic ioapics[MAX_IOAPICS];
u32 nr_ioapics;
struct iso isos[MAX_ISOS];
u32 nr_isos;
struct cpu cpus[MAX_CPUS];
u32 cpus_listed;
volatile u32 cpus_online;

#define TABLE_MAX_LEN (1u << 20)
#define ROOT_MAX_ENTRIES 256
#define MADT_MAX_ENTRIES 1024

static u8 rd8(u64 a)
{
	return *(volatile u8 *)a;
}
static u16 rd16(u64 a)
{
	return *(volatile u16 *)a;
}
static u32 rd32(u64 a)
{
	return *(volatile u32 *)a;
}
static u64 rd64(u64 a)
{
	return *(volatile u64 *)a;
}

static int sig_is(u64 a, const char *sig, u32 n)
{
	for (u32 i = 0; i < n; i++)
		if (rd8(a + i) != (u8)sig[i])
			return 0;
	return 1;
}

static int checksum_ok(u64 a, u32 len)
{
	u8 sum = 0;
	for (u32 i = 0; i < len; i++)
		sum = (u8)(sum + rd8(a + i));
	return sum == 0;
}

/* Length of the SDT at a, or 0 if it is not a plausible table. */
static u32 sdt_len(u64 a)
{
	if (!phys_ok(a, 36))
		return 0;
	u32 len = rd32(a + 4);
	if (len < 36 || len > TABLE_MAX_LEN || !phys_ok(a, len))
		return 0;
	return len;
}

static int rsdp_ok(u64 a)
{
	if (!phys_ok(a, 36) || !sig_is(a, "RSD PTR ", 8))
		return 0;
	return checksum_ok(a, 20);
}

/* Search [start, start+len) on 16-byte boundaries for a signature. */
static u64 scan(u64 start, u64 len, const char *sig, int (*ok)(u64))
{
	for (u64 a = start; a + 16 <= start + len; a += 16)
		if (sig_is(a, sig, 4) && ok(a))
			return a;
	return 0;
}

static int rsdp_ok_scan(u64 a)
{
	return sig_is(a, "RSD PTR ", 8) && checksum_ok(a, 20);
}

static int mpfp_ok(u64 a)
{
	u32 len = (u32)rd8(a + 8) * 16;
	return len >= 16 && len <= 64 && checksum_ok(a, len);
}

/*
 * The BIOS areas are only scanned if the memory map covers them (RAM or
 * reserved): otherwise the reads would be MMIO exits to a VMM that has
 * nothing there.  With no memory map at all, scan anyway.
 */
static int area_present(u64 a, u64 len)
{
	return !bootinfo.nr_mem || mem_range_has_type(a, len, 0, 1);
}

static u64 bios_scan(const char *sig, int (*ok)(u64))
{
	u64 r = 0;
	if (area_present(0x400, 0x100)) {
		u64 ebda = (u64)rd16(0x40e) << 4;
		if (ebda >= 0x80000 && ebda < 0xa0000 && area_present(ebda, 1024))
			r = scan(ebda, 1024, sig, ok);
	}
	if (!r && area_present(0x9fc00, 1024))
		r = scan(0x9fc00, 1024, sig, ok);
	if (!r && area_present(0xe0000, 0x20000))
		r = scan(0xe0000, 0x20000, sig, ok);
	return r;
}

/* ---- CPU list ---- */
static void add_cpu(u32 apic_id)
{
	for (u32 i = 0; i < cpus_listed; i++)
		if (cpus[i].apic_id == apic_id)
			return;
	if (cpus_listed >= MAX_CPUS)
		return;
	cpus[cpus_listed].apic_id = apic_id;
	cpus[cpus_listed].online = 0;
	cpus_listed++;
}

static void add_ioapic(u8 id, u64 addr, u32 gsi_base)
{
	if (nr_ioapics >= MAX_IOAPICS || !phys_ok(addr, 0x20))
		return;
	ioapics[nr_ioapics].id = id;
	ioapics[nr_ioapics].addr = addr;
	ioapics[nr_ioapics].gsi_base = gsi_base;
	ioapics[nr_ioapics].pins = 0;
	nr_ioapics++;
}

static void add_iso(u8 irq, u32 gsi, u16 flags)
{
	if (nr_isos >= MAX_ISOS || irq >= 16)
		return;
	isos[nr_isos].irq = irq;
	isos[nr_isos].gsi = gsi;
	isos[nr_isos].flags = flags;
	nr_isos++;
}

static void parse_madt(u64 t, u32 len)
{
	u64 p = t + 44, end = t + len;
	for (u32 n = 0; n < MADT_MAX_ENTRIES && p + 2 <= end; n++) {
		u8 type = rd8(p), elen = rd8(p + 1);
		if (elen < 2 || p + elen > end)
			break;
		if (type == 0 && elen >= 8) {            /* Processor Local APIC */
			if (rd32(p + 4) & 1)
				add_cpu(rd8(p + 3));
		} else if (type == 9 && elen >= 16) {    /* Processor Local x2APIC */
			if (rd32(p + 8) & 1)
				add_cpu(rd32(p + 4));
		} else if (type == 1 && elen >= 12) {    /* I/O APIC */
			add_ioapic(rd8(p + 2), rd32(p + 4), rd32(p + 8));
		} else if (type == 2 && elen >= 10) {    /* Interrupt Source Override */
			if (rd8(p + 2) == 0)             /* bus 0 = ISA */
				add_iso(rd8(p + 3), rd32(p + 4), rd16(p + 8));
		}
		p += elen;
	}
}

static void parse_s5(u64 dsdt)
{
	u32 len = sdt_len(dsdt);
	if (!len)
		return;
	u64 end = dsdt + len;
	for (u64 p = dsdt + 36; p + 8 <= end; p++) {
		if (!sig_is(p, "_S5_", 4))
			continue;
		/* NameOp (0x08) "_S5_", optionally with a root prefix '\' */
		u8 prev = rd8(p - 1);
		if (prev != 0x08 && !(prev == '\\' && rd8(p - 2) == 0x08))
			continue;
		u64 q = p + 4;
		if (rd8(q) != 0x12)                      /* PackageOp */
			continue;
		q++;
		q += ((rd8(q) >> 6) & 3) + 1;            /* PkgLength */
		q++;                                     /* NumElements */
		if (q + 2 > end)
			return;
		u8 op = rd8(q);
		u8 v;
		if (op == 0x0a)                          /* BytePrefix */
			v = rd8(q + 1);
		else if (op == 0x00 || op == 0x01)       /* ZeroOp, OneOp */
			v = op;
		else if (op == 0xff)                     /* OnesOp */
			v = 7;
		else if (op == 0x0b || op == 0x0c)       /* WordPrefix, DWordPrefix */
			v = rd8(q + 1);
		else
			return;
		acpi.s5_typ = v & 7;
		acpi.have_s5 = 1;
		return;
	}
}

/*
 * virtio-mmio transports in the DSDT: Device (...) { Name (_HID,
 * "LNRO0005") ... Name (_CRS, ResourceTemplate () { Memory32Fixed (...)
 * Interrupt (...) { GSI } }) }.  No AML interpreter: after each "LNRO0005"
 * string, look (within 256 bytes, before the next one) for a
 * Memory32Fixed descriptor (0x86, length 9) and then an Extended Interrupt
 * descriptor (0x89).
 */
#define LNRO_SCAN 256

static void scan_virtio_mmio(u64 dsdt)
{
	u32 len = sdt_len(dsdt);
	if (!len)
		return;
	u64 end = dsdt + len;
	for (u64 p = dsdt + 36; p + 9 <= end; p++) {
		if (rd8(p) != 'L' || !sig_is(p, "LNRO0005", 9))
			continue;
		u64 base = 0, size = 0;
		u64 q = p + 9, lim = q + LNRO_SCAN < end ? q + LNRO_SCAN : end;
		for (; q + 10 <= lim; q++) {
			if (rd8(q) == 'L' && sig_is(q, "LNRO0005", 8))
				break;
			if (!base && rd8(q) == 0x86 && rd8(q + 1) == 9 && rd8(q + 2) == 0) {
				base = rd32(q + 4);
				size = rd32(q + 8);
				q += 11;
				continue;
			}
			if (base && rd8(q) == 0x89 && rd16(q + 1) >= 6 && rd8(q + 4) >= 1) {
				u8 f = rd8(q + 3);
				/* bit 1: edge, bit 2: active low -> MPS INTI flags */
				u16 flags = (u16)(((f & 4) ? 3 : 1) | ((f & 2) ? (1 << 2) : (3 << 2)));
				virtio_add_acpi(base, size, rd32(q + 5), flags);
				break;
			}
		}
		p = q - 1;
	}
}

static void read_gas(u64 a, struct gas *g)
{
	g->space = rd8(a);
	g->width = rd8(a + 1);
	g->addr = rd64(a + 4);
}

static void parse_fadt(u64 t, u32 len)
{
	if (len >= 48)
		acpi.sci_irq = rd16(t + 46);
	if (len >= 60)
		acpi.pm1a_evt = rd32(t + 56);
	if (!acpi.pm1a_evt && len >= 160) {
		struct gas g;
		read_gas(t + 148, &g);             /* X_PM1a_EVT_BLK */
		if (g.space == 1 && g.addr && g.addr < 0x10000)
			acpi.pm1a_evt = (u32)g.addr;
	}
	if (len >= 89)
		acpi.pm1_evt_len = rd8(t + 88);
	if (len >= 116)                            /* PWR_BUTTON (bit 4) clear */
		acpi.fixed_pwrbtn = !(rd32(t + 112) & (1u << 4));
	if (len >= 68)
		acpi.pm1a_cnt = rd32(t + 64);
	if (!acpi.pm1a_cnt && len >= 184) {
		struct gas g;
		read_gas(t + 172, &g);             /* X_PM1a_CNT_BLK */
		if (g.space == 1 && g.addr && g.addr < 0x10000)
			acpi.pm1a_cnt = (u32)g.addr;
	}
	if (len >= 129) {
		u32 flags = rd32(t + 112);
		if (flags & (1u << 10)) {          /* RESET_REG_SUP */
			read_gas(t + 116, &acpi.reset_reg);
			acpi.reset_val = rd8(t + 128);
			acpi.have_reset = acpi.reset_reg.addr != 0;
		}
	}
	if (len >= 256)
		read_gas(t + 244, &acpi.sleep_ctl);     /* SLEEP_CONTROL_REG */
	u64 dsdt = len >= 44 ? rd32(t + 40) : 0;
	if (len >= 148 && rd64(t + 140))
		dsdt = rd64(t + 140);                   /* X_DSDT */
	acpi.dsdt = dsdt;
	parse_s5(dsdt);
	scan_virtio_mmio(dsdt);
}

static int parse_acpi(u64 rsdp)
{
	u64 root;
	u32 entsz;
	u8 rev = rd8(rsdp + 15);
	if (rev >= 2 && rd32(rsdp + 20) >= 36 && checksum_ok(rsdp, 36) && rd64(rsdp + 24)) {
		root = rd64(rsdp + 24);
		entsz = 8;
	} else {
		root = rd32(rsdp + 16);
		entsz = 4;
	}
	u32 len = sdt_len(root);
	if (!len || !(sig_is(root, entsz == 8 ? "XSDT" : "RSDT", 4)))
		return 0;
	u32 n = (len - 36) / entsz;
	if (n > ROOT_MAX_ENTRIES)
		n = ROOT_MAX_ENTRIES;
	for (u32 i = 0; i < n; i++) {
		u64 e = root + 36 + (u64)i * entsz;
		u64 t = entsz == 8 ? rd64(e) : rd32(e);
		u32 tlen = sdt_len(t);
		if (!tlen)
			continue;
		if (sig_is(t, "APIC", 4) && !acpi.madt) {
			acpi.madt = t;
			parse_madt(t, tlen);
		} else if (sig_is(t, "FACP", 4) && !acpi.fadt) {
			acpi.fadt = t;
			parse_fadt(t, tlen);
		}
	}
	return 1;
}

static void parse_mptable(u64 fp)
{
	u64 ct = rd32(fp + 4);
	if (!phys_ok(ct, 44) || !sig_is(ct, "PCMP", 4))
		return;
	u32 len = rd16(ct + 4);
	if (len < 44 || !phys_ok(ct, len))
		return;
	acpi.mptable = ct;
	/* Walk by the base table length, like Linux: some firmware (qboot)
	 * leaves the entry count at 0. */
	u64 p = ct + 44, end = ct + len;
	u32 isa_buses = 0, any_bus = 0;          /* bitmap of bus ids 0-31 */
	for (u32 i = 0; i < MADT_MAX_ENTRIES && p < end; i++) {
		u8 type = rd8(p);
		if (type == 0) {                         /* processor, 20 bytes */
			if (p + 20 > end)
				break;
			if (rd8(p + 3) & 1)              /* CPU_EN */
				add_cpu(rd8(p + 1));
			p += 20;
		} else if (type <= 4 && p + 8 > end) {
			break;
		} else if (type == 1) {                  /* bus */
			any_bus = 1;
			if (rd8(p + 1) < 32 && sig_is(p + 2, "ISA", 3))
				isa_buses |= 1u << rd8(p + 1);
			p += 8;
		} else if (type == 2) {                  /* I/O APIC */
			if (rd8(p + 3) & 1) {
				/* GSIs are numbered across the I/O APICs in table order */
				u32 gsi = nr_ioapics ? ioapics[nr_ioapics - 1].gsi_base + 24 : 0;
				add_ioapic(rd8(p + 1), rd32(p + 4), gsi);
			}
			p += 8;
		} else if (type == 3) {                  /* I/O interrupt assignment */
			u8 bus = rd8(p + 4), irq = rd8(p + 5), dst = rd8(p + 6), pin = rd8(p + 7);
			u16 flags = rd16(p + 2);
			int isa = !any_bus || (bus < 32 && (isa_buses & (1u << bus)));
			if (rd8(p + 1) == 0 && isa && (irq != pin || flags)) {
				u32 base = 0;
				for (u32 k = 0; k < nr_ioapics; k++)
					if (ioapics[k].id == dst)
						base = ioapics[k].gsi_base;
				add_iso(irq, base + pin, flags);
			}
			p += 8;
		} else if (type <= 4) {
			p += 8;
		} else {
			break;
		}
	}
}

void acpi_init(void)
{
	u64 rsdp = 0;
	if (bootinfo.rsdp && rsdp_ok(bootinfo.rsdp))
		rsdp = bootinfo.rsdp;
	if (!rsdp)
		rsdp = bios_scan("RSD PTR ", rsdp_ok_scan);
	acpi.rsdp = rsdp;
	if (rsdp)
		parse_acpi(rsdp);
	if (!acpi.madt) {
		u64 fp = bios_scan("_MP_", mpfp_ok);
		if (fp)
			parse_mptable(fp);
	}
	if (rsdp)
		kprintf("acpi: rsdp 0x%lx madt 0x%lx fadt 0x%lx s5 %s%u\n", rsdp, acpi.madt, acpi.fadt,
			acpi.have_s5 ? "" : "default ", acpi.have_s5 ? acpi.s5_typ : 5);
	else
		kprintf("acpi: no rsdp\n");
	if (acpi.mptable)
		kprintf("mptable: 0x%lx\n", acpi.mptable);
}

static void gas_write8(const struct gas *g, u8 v)
{
	if (g->space == 0 && phys_ok(g->addr, 1))
		mmio_write8(g->addr, v);
	else if (g->space == 1 && g->addr < 0x10000)
		outb((u16)g->addr, v);
}

/*
 * Returns 0 if there is no ACPI power-off register, 1 if it was written
 * (and the power-off did not happen, since we are still here).
 */
int acpi_poweroff(void)
{
	u32 typ = acpi.have_s5 ? acpi.s5_typ : 5;
	if (acpi.pm1a_cnt && acpi.pm1a_cnt < 0x10000) {
		u16 port = (u16)acpi.pm1a_cnt;
		u16 v = inw(port);
		v = (u16)((v & ~((7u << 10) | (1u << 13))) | (typ << 10) | (1u << 13));
		kprintf("poweroff: acpi s5 (pm1a_cnt 0x%x, slp_typ %u)\n", port, typ);
		outw(port, v);
		return 1;
	}
	if (acpi.sleep_ctl.addr) {
		/* HW-reduced ACPI: SLP_TYP in bits 4:2, SLP_EN bit 5 */
		kprintf("poweroff: acpi s5 (sleep control 0x%lx, slp_typ %u)\n", acpi.sleep_ctl.addr, typ);
		gas_write8(&acpi.sleep_ctl, (u8)(((typ & 7) << 2) | (1u << 5)));
		return 1;
	}
	return 0;
}

/* Returns only if the reset did not happen. */
void acpi_reset(void)
{
	if (acpi.have_reset)
		gas_write8(&acpi.reset_reg, acpi.reset_val);
}

/*
 * The SCI and the fixed-feature power button.  PM1a_STS is at pm1a_evt,
 * PM1a_EN at pm1a_evt + pm1_evt_len / 2; status bits are write-one-to-
 * clear.  The handler runs only inside sti; hlt waits (the shell's idle
 * loop, device and tick waits), like every other handler.
 */
#define PM1_PWRBTN (1u << 8)

volatile u32 sci_irqs;

static u16 pm1_en_port(void)
{
	return (u16)(acpi.pm1a_evt + acpi.pm1_evt_len / 2);
}

static void sci_irq(void *arg)
{
	(void)arg;
	sci_irqs++;
	u16 sts = inw((u16)acpi.pm1a_evt);
	u16 en = inw(pm1_en_port());
	if (sts & en & PM1_PWRBTN) {
		outw((u16)acpi.pm1a_evt, PM1_PWRBTN);   /* acknowledge */
		kprintf("acpi: power button\n");
		do_poweroff();                          /* does not return */
	}
	/* Anything else enabled and pending: acknowledge it, or the level-
	 * triggered SCI would fire again at once. */
	if (sts & en)
		outw((u16)acpi.pm1a_evt, (u16)(sts & en));
}

void acpi_sci_init(void)
{
	if (!acpi.pm1a_evt || acpi.pm1a_evt >= 0x10000 || acpi.pm1_evt_len < 4 ||
	    !acpi.fixed_pwrbtn || !irq_enabled)
		return;
	/* The SCI is shareable, level-triggered, active low unless an
	 * Interrupt Source Override says otherwise (ACPI 5.2.12.5). */
	u16 flags = 0x0f;
	int is_gsi = acpi.sci_irq >= 16;
	for (u32 i = 0; i < nr_isos && !is_gsi; i++)
		if (isos[i].irq == acpi.sci_irq && isos[i].flags)
			flags = isos[i].flags;
	irq_set_handler(VEC_SCI, sci_irq, 0);
	int gsi = irq_route(acpi.sci_irq, is_gsi, flags, VEC_SCI);
	if (gsi < 0) {
		kprintf("acpi: sci irq %u has no i/o apic pin, power button off\n", acpi.sci_irq);
		return;
	}
	/* A press before we were ready is stale: clear it, then enable. */
	outw((u16)acpi.pm1a_evt, PM1_PWRBTN);
	outw(pm1_en_port(), (u16)(inw(pm1_en_port()) | PM1_PWRBTN));
	kprintf("acpi: power button on sci gsi %d vector 0x%x\n", gsi, VEC_SCI);
}
