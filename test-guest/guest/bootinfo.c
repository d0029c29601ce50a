/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: read what the boot protocol handed us (Linux
 * struct boot_params or Xen PVH struct hvm_start_info) and copy it into
 * struct bootinfo, so that low memory can be reused afterwards.
 */
#include "guest.h"

struct bootinfo bootinfo;

/* struct boot_params ("zero page") offsets, arch/x86/include/uapi/asm/bootparam.h */
#define BP_ACPI_RSDP_ADDR 0x070   /* u64 */
#define BP_EXT_CMD_LINE_PTR 0x0c8 /* u32 */
#define BP_E820_ENTRIES 0x1e8     /* u8 */
#define BP_CMD_LINE_PTR 0x228     /* u32, hdr.cmd_line_ptr */
#define BP_E820_TABLE 0x2d0       /* 128 x { u64 addr; u64 size; u32 type; } packed */
#define BP_SIZE 0x1000
#define BP_E820_MAX 128

/* struct hvm_start_info, xen/include/public/arch-x86/hvm/start_info.h */
#define HVM_START_MAGIC 0x336ec578
#define HVM_MAGIC 0
#define HVM_VERSION 4
#define HVM_CMDLINE 24
#define HVM_RSDP 32
#define HVM_MEMMAP 40
#define HVM_MEMMAP_ENTRIES 48
#define HVM_SIZE_V0 40
#define HVM_SIZE_V1 56
#define HVM_MEMMAP_ENTRY_SIZE 24

static u64 rd64(u64 a)
{
	return *(volatile u64 *)a;
}
static u32 rd32(u64 a)
{
	return *(volatile u32 *)a;
}

static void copy_cmdline(u64 addr)
{
	bootinfo.cmdline[0] = 0;
	if (!phys_ok(addr, MAX_CMDLINE))
		return;
	const volatile char *src = (const volatile char *)addr;
	u32 i;
	for (i = 0; i < MAX_CMDLINE - 1 && src[i]; i++) {
		char c = src[i];
		/* keep the console sane: replace control characters */
		bootinfo.cmdline[i] = (c >= 0x20 && c < 0x7f) ? c : ' ';
	}
	bootinfo.cmdline[i] = 0;
}

static void add_mem(u64 addr, u64 size, u32 type)
{
	if (bootinfo.nr_mem >= MAX_MEM_ENTRIES || !size)
		return;  /* full, or an empty entry (dropped, as Linux does) */
	struct mem_entry *e = &bootinfo.mem[bootinfo.nr_mem++];
	e->addr = addr;
	e->size = size;
	e->type = type;
}

static void collect_linux64(u64 bp)
{
	if (!phys_ok(bp, BP_SIZE)) {
		kprintf("boot: boot_params pointer 0x%lx is not usable\n", bp);
		return;
	}
	u32 n = *(volatile u8 *)(bp + BP_E820_ENTRIES);
	if (n > BP_E820_MAX)
		n = BP_E820_MAX;
	for (u32 i = 0; i < n; i++) {
		u64 e = bp + BP_E820_TABLE + (u64)i * 20;
		add_mem(rd64(e), rd64(e + 8), rd32(e + 16));
	}
	u64 cl = (u64)rd32(bp + BP_CMD_LINE_PTR) | ((u64)rd32(bp + BP_EXT_CMD_LINE_PTR) << 32);
	copy_cmdline(cl);
	bootinfo.rsdp = rd64(bp + BP_ACPI_RSDP_ADDR);
}

static void collect_pvh(u64 si)
{
	if (!phys_ok(si, HVM_SIZE_V1)) {
		kprintf("boot: hvm_start_info pointer 0x%lx is not usable\n", si);
		return;
	}
	if (rd32(si + HVM_MAGIC) != HVM_START_MAGIC) {
		kprintf("boot: bad hvm_start_info magic 0x%x\n", rd32(si + HVM_MAGIC));
		return;
	}
	u32 version = rd32(si + HVM_VERSION);
	copy_cmdline(rd64(si + HVM_CMDLINE));
	bootinfo.rsdp = rd64(si + HVM_RSDP);
	if (version >= 1) {
		u64 mm = rd64(si + HVM_MEMMAP);
		u32 n = rd32(si + HVM_MEMMAP_ENTRIES);
		if (n > MAX_MEM_ENTRIES)
			n = MAX_MEM_ENTRIES;
		if (n && phys_ok(mm, (u64)n * HVM_MEMMAP_ENTRY_SIZE)) {
			for (u32 i = 0; i < n; i++) {
				u64 e = mm + (u64)i * HVM_MEMMAP_ENTRY_SIZE;
				add_mem(rd64(e), rd64(e + 8), rd32(e + 16));
			}
		}
	}
}

void bootinfo_collect(u32 kind, u64 info)
{
	bootinfo.kind = kind;
	if (kind == BOOT_KIND_PVH)
		collect_pvh(info);
	else
		collect_linux64(info);
}

const char *boot_kind_name(u32 kind)
{
	return kind == BOOT_KIND_PVH ? "pvh" : "linux64";
}

static const char *mem_type_name(u32 type, char *buf)
{
	switch (type) {
	case E820_USABLE:
		return "usable";
	case E820_RESERVED:
		return "reserved";
	case E820_ACPI:
		return "ACPI data";
	case E820_NVS:
		return "ACPI NVS";
	case E820_UNUSABLE:
		return "unusable";
	default: {
		/* "type N" */
		char tmp[12];
		int n = 0;
		u32 v = type;
		do {
			tmp[n++] = (char)('0' + v % 10);
			v /= 10;
		} while (v);
		memcpy(buf, "type ", 5);
		int j = 5;
		while (n)
			buf[j++] = tmp[--n];
		buf[j] = 0;
		return buf;
	}
	}
}

void print_memmap(void)
{
	u64 usable = 0;
	char buf[20];
	if (!bootinfo.nr_mem)
		kprintf("e820: no memory map\n");
	for (u32 i = 0; i < bootinfo.nr_mem; i++) {
		const struct mem_entry *e = &bootinfo.mem[i];
		u64 end = e->size ? e->addr + e->size - 1 : e->addr;
		kprintf("e820: [mem 0x%016lx-0x%016lx] %s\n", e->addr, end, mem_type_name(e->type, buf));
		if (e->type == E820_USABLE)
			usable += e->size;
	}
	kprintf("mem: total usable %lu KiB\n", usable >> 10);
}

/*
 * Does [addr, addr+len) lie inside one memory map entry of the given type
 * (or of any type, if any_type)?
 */
int mem_range_has_type(u64 addr, u64 len, u32 type, int any_type)
{
	for (u32 i = 0; i < bootinfo.nr_mem; i++) {
		const struct mem_entry *e = &bootinfo.mem[i];
		if (!any_type && e->type != type)
			continue;
		if (addr >= e->addr && len <= e->size && addr - e->addr <= e->size - len)
			return 1;
	}
	return 0;
}
