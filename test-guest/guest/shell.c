/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: the serial shell and the kvmkit.autorun= parameter.
 */
#include "guest.h"

#define LINE_MAX 128
#define AUTORUN_PARAM "kvmkit.autorun="
#define RESET_SETTLE_LOOPS 50000

static char *skip_spaces(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	return s;
}

/* Splits off the first word of *s (NUL-terminating it) and advances *s. */
static char *next_word(char **s)
{
	char *w = skip_spaces(*s);
	char *e = w;
	while (*e && *e != ' ' && *e != '\t')
		e++;
	if (*e)
		*e++ = 0;
	*s = e;
	return w;
}

static void cmd_help(void)
{
	kprintf("help              list the commands\n");
	kprintf("mem               print the memory map and the usable total\n");
	kprintf("cpus              print the online CPUs and their APIC ids\n");
	kprintf("cmdline           print the kernel command line\n");
	kprintf("echo TEXT         print TEXT\n");
	kprintf("peek ADDR         print the u64 at guest-physical ADDR (hex)\n");
	kprintf("poke ADDR VALUE   write the u64 VALUE (hex) at guest-physical ADDR (hex)\n");
	kprintf("dirty [N]         dirty N pages (default %u) until a key arrives\n", DIRTY_DEFAULT_PAGES);
	kprintf("count             print the dirty counter (u64 at 0x%x)\n", MAILBOX_COUNTER);
	kprintf("poweroff          ACPI S5, then i8042 reset, then halt\n");
	kprintf("reboot            i8042 reset\n");
	kprintf("fault             execute ud2 (tests the exception handler)\n");
	kprintf("virtio            list the virtio-mmio devices\n");
	kprintf("blk read SECTOR   read a 512-byte sector, print its first 64 bytes\n");
	kprintf("blk write SECTOR TEXT  write TEXT, zero-padded to 512 bytes\n");
	kprintf("blk id            print the disk's id string (GET_ID)\n");
	kprintf("blk flush         flush the disk's write cache\n");
	kprintf("net mac           print the virtio-net MAC address\n");
	kprintf("net send TEXT     broadcast an Ethernet frame (type 0x88b5) with TEXT\n");
	kprintf("net recv [MS]     wait up to MS ms (default 3000) for a frame\n");
	kprintf("irqs              print the interrupt counts\n");
	kprintf("ticks [N]         print tick: K every N timer ticks (default 10) until a key arrives\n");
}

static void cmd_cpus(void)
{
	kprintf("cpus: %u online\n", cpus_online);
	for (u32 i = 0; i < cpus_listed; i++)
		if (cpus[i].online)
			kprintf("cpu %u: apic id %u\n", i, cpus[i].apic_id);
}

static int parse_addr(const char *cmd, const char *s, u64 *addr)
{
	if (!parse_u64(s, 16, addr)) {
		kprintf("%s: bad address '%s'\n", cmd, s);
		return 0;
	}
	if (*addr > IDENTITY_MAP_END - 8) {
		kprintf("%s: address 0x%lx is outside the identity map (below 4 GiB)\n", cmd, *addr);
		return 0;
	}
	return 1;
}

static void cmd_peek(char *args)
{
	char *a = next_word(&args);
	u64 addr;
	if (!*a) {
		kprintf("usage: peek ADDR\n");
		return;
	}
	if (!parse_addr("peek", a, &addr))
		return;
	kprintf("0x%016lx: 0x%016lx\n", addr, *(volatile u64 *)addr);
}

static void cmd_poke(char *args)
{
	char *a = next_word(&args);
	char *v = next_word(&args);
	u64 addr, val;
	if (!*a || !*v) {
		kprintf("usage: poke ADDR VALUE\n");
		return;
	}
	if (!parse_addr("poke", a, &addr))
		return;
	if (!parse_u64(v, 16, &val)) {
		kprintf("poke: bad value '%s'\n", v);
		return;
	}
	*(volatile u64 *)addr = val;
	kprintf("0x%016lx: 0x%016lx\n", addr, *(volatile u64 *)addr);
}

/*
 * The live-migration workload: forever, increment the u64 counter at
 * MAILBOX_COUNTER and store it into the next page of the buffer at
 * DIRTY_BUFFER_ADDR (page i gets the counter at offsets 0 and 2048),
 * until a byte arrives on COM1.  Progress is printed when the counter
 * reaches a power of two >= 2^16, so rarely whatever the speed.
 */
static void cmd_dirty(char *args)
{
	char *a = next_word(&args);
	u64 pages = DIRTY_DEFAULT_PAGES;
	if (*a && (!parse_u64(a, 10, &pages) || !pages)) {
		kprintf("dirty: bad page count '%s'\n", a);
		return;
	}
	/* clamp to the usable RAM entry that holds the buffer */
	u64 avail = 0;
	for (u32 i = 0; i < bootinfo.nr_mem; i++) {
		const struct mem_entry *e = &bootinfo.mem[i];
		if (e->type == E820_USABLE && e->addr <= DIRTY_BUFFER_ADDR &&
		    DIRTY_BUFFER_ADDR - e->addr < e->size) {
			u64 end = e->addr + e->size;
			if (end > IDENTITY_MAP_END || end < e->addr)
				end = IDENTITY_MAP_END;
			avail = (end - DIRTY_BUFFER_ADDR) >> 12;
		}
	}
	if (!avail) {
		kprintf("dirty: no usable RAM at 0x%x\n", DIRTY_BUFFER_ADDR);
		return;
	}
	if (pages > avail) {
		kprintf("dirty: only %lu pages available, using those\n", avail);
		pages = avail;
	}
	volatile u64 *ctr = (volatile u64 *)(u64)MAILBOX_COUNTER;
	*(volatile u64 *)(u64)MAILBOX_DIRTY_PAGES = pages;
	kprintf("dirty: %lu pages at 0x%x, counter at 0x%x; press a key to stop\n", pages,
		DIRTY_BUFFER_ADDR, MAILBOX_COUNTER);
	u64 page = 0, written = 0;
	for (;;) {
		written++;
		u64 c = *ctr + 1;
		*ctr = c;
		volatile u64 *p = (volatile u64 *)(DIRTY_BUFFER_ADDR + (page << 12));
		p[0] = c;
		p[256] = c;
		if (++page == pages)
			page = 0;
		if ((c & 0xffff) == 0) {
			if (!(c & (c - 1)))
				kprintf("dirty: counter %lu\n", c);
			if (serial_getc() >= 0)
				break;
		}
	}
	u64 last = *ctr;
	kprintf("dirty: stopped, counter %lu\n", last);
	/*
	 * Check every page against the counter: walking back from the page
	 * written last, the k-th one holds last - k at both offsets, for the
	 * pages this run wrote.  Across a snapshot or a migration this proves
	 * memory and CPU state arrived together.
	 */
	u64 span = written < pages ? written : pages;
	u64 at = page == 0 ? pages - 1 : page - 1;
	for (u64 k = 0; k < span; k++) {
		volatile u64 *p = (volatile u64 *)(DIRTY_BUFFER_ADDR + (at << 12));
		if (p[0] != last - k || p[256] != last - k) {
			kprintf("dirty: verify FAILED: page %lu holds %lu/%lu, expected %lu\n", at,
				p[0], p[256], last - k);
			return;
		}
		at = at == 0 ? pages - 1 : at - 1;
	}
	kprintf("dirty: verify ok, %lu pages\n", span);
}

/*
 * A heartbeat on the console: `tick: K` every N timer ticks (10 ms
 * each), until a byte arrives on COM1 (consumed).  Waits with interrupts
 * on (sti; hlt), so the SCI (the power button) is taken meanwhile.
 */
#define TICKS_DEFAULT 10
#define TICKS_MAX 100000

static int key_pressed;

static int key_cond(void *arg)
{
	(void)arg;
	if (!key_pressed && serial_getc() >= 0)
		key_pressed = 1;
	return key_pressed;
}

static void cmd_ticks(char *args)
{
	char *a = next_word(&args);
	u64 n = TICKS_DEFAULT;
	if (*a && (!parse_u64(a, 10, &n) || !n || n > TICKS_MAX)) {
		kprintf("ticks: bad tick count '%s' (1 to %u)\n", a, TICKS_MAX);
		return;
	}
	kprintf("ticks: every %lu timer ticks; press a key to stop\n", n);
	key_pressed = 0;
	u64 k = 0;
	while (!irq_wait(key_cond, 0, (u32)n))
		kprintf("tick: %lu\n", ++k);
	kprintf("ticks: stopped after %lu\n", k);
}

static void reset_i8042(void)
{
	/* wait (bounded) for the input buffer to drain; absent = reads 0xff */
	for (u32 i = 0; i < 1000 && (inb(0x64) & 0x02); i++)
		cpu_relax();
	outb(0x64, 0xfe);
}

void do_poweroff(void)
{
	if (acpi_poweroff()) {
		delay(RESET_SETTLE_LOOPS);
		kprintf("poweroff: acpi did not power off, trying i8042 reset\n");
	} else {
		kprintf("poweroff: no acpi power-off register, trying i8042 reset\n");
	}
	reset_i8042();
	delay(RESET_SETTLE_LOOPS);
	kprintf("poweroff: still running, halting\n");
	halt_forever();
}

void do_reboot(void)
{
	kprintf("reboot: i8042 reset\n");
	reset_i8042();
	delay(RESET_SETTLE_LOOPS);
	if (acpi.have_reset) {
		kprintf("reboot: trying the acpi reset register\n");
		acpi_reset();
		delay(RESET_SETTLE_LOOPS);
	}
	kprintf("reboot: failed\n");
}

void shell_run_line(char *line)
{
	char *rest = line;
	char *cmd = next_word(&rest);
	if (!*cmd)
		return;
	if (!strcmp(cmd, "help")) {
		cmd_help();
	} else if (!strcmp(cmd, "mem")) {
		print_memmap();
	} else if (!strcmp(cmd, "cpus")) {
		cmd_cpus();
	} else if (!strcmp(cmd, "cmdline")) {
		kprintf("cmdline: %s\n", bootinfo.cmdline);
	} else if (!strcmp(cmd, "echo")) {
		kprintf("%s\n", skip_spaces(rest));
	} else if (!strcmp(cmd, "peek")) {
		cmd_peek(rest);
	} else if (!strcmp(cmd, "poke")) {
		cmd_poke(rest);
	} else if (!strcmp(cmd, "dirty")) {
		cmd_dirty(rest);
	} else if (!strcmp(cmd, "count")) {
		kprintf("count: %lu\n", *(volatile u64 *)(u64)MAILBOX_COUNTER);
	} else if (!strcmp(cmd, "poweroff")) {
		do_poweroff();
	} else if (!strcmp(cmd, "reboot")) {
		do_reboot();
	} else if (!strcmp(cmd, "fault")) {
		__asm__ volatile("ud2");
	} else if (!strcmp(cmd, "virtio")) {
		virtio_list();
	} else if (!strcmp(cmd, "blk")) {
		cmd_blk(rest);
	} else if (!strcmp(cmd, "net")) {
		cmd_net(rest);
	} else if (!strcmp(cmd, "irqs")) {
		cmd_irqs();
	} else if (!strcmp(cmd, "ticks")) {
		cmd_ticks(rest);
	} else {
		kprintf("unknown command: %s\n", cmd);
	}
}

/*
 * kvmkit.autorun=CMD[,CMD...]: run the commands before the prompt.  The
 * value ends at a space (or is enclosed in double quotes); inside it ':'
 * stands for a space, e.g. kvmkit.autorun=echo:hi,peek:0x9000,poweroff.
 * Each command is echoed after the prompt, as if it had been typed.
 */
void shell_autorun(void)
{
	static char buf[MAX_CMDLINE];
	const char *v = cmdline_find(AUTORUN_PARAM);   /* the last one wins */
	if (!v)
		return;
	u32 n = 0;
	if (*v == '"') {
		v++;
		while (v[n] && v[n] != '"' && n < MAX_CMDLINE - 1)
			n++;
	} else {
		while (v[n] && v[n] != ' ' && n < MAX_CMDLINE - 1)
			n++;
	}
	memcpy(buf, v, n);
	buf[n] = 0;
	char *p = buf;
	while (*p) {
		char *c = p;
		while (*p && *p != ',')
			p++;
		if (*p)
			*p++ = 0;
		for (char *q = c; *q; q++)
			if (*q == ':')
				*q = ' ';
		if (!*skip_spaces(c))
			continue;
		kprintf(PROMPT "%s\n", c);
		shell_run_line(c);
	}
}

static u32 read_line(char *line)
{
	static int last_cr;
	u32 n = 0;
	for (;;) {
		int c = serial_getc();
		if (c < 0) {
			irq_idle();   /* sti; hlt until COM1 or the timer interrupts */
			continue;
		}
		if (c == '\n' && last_cr) {
			last_cr = 0;
			continue;   /* the LF of a CR LF pair */
		}
		last_cr = c == '\r';
		if (c == '\r' || c == '\n') {
			kprintf("\n");
			line[n] = 0;
			return n;
		}
		if (c == 0x08 || c == 0x7f) {
			if (n) {
				n--;
				kprintf("\b \b");
			}
			continue;
		}
		if (c == 0x15) {   /* ^U: kill the line */
			while (n) {
				n--;
				kprintf("\b \b");
			}
			continue;
		}
		if (c < 0x20 || c >= 0x7f || n >= LINE_MAX - 1)
			continue;
		line[n++] = (char)c;
		kprintf("%c", c);
	}
}

void shell_loop(void)
{
	static char line[LINE_MAX];
	for (;;) {
		kprintf(PROMPT);
		read_line(line);
		shell_run_line(line);
	}
}
