/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: virtio-mmio (virtio 1.x, MMIO transport version 2)
 * with split virtqueues, and small virtio-blk and virtio-net drivers.
 *
 * Transports come from `virtio_mmio.device=<size>@<base>:<irq>` on the
 * kernel command line (several allowed; irq is an ISA IRQ / GSI number, as
 * Linux reads it) and from LNRO0005 devices in the DSDT (acpi.c).  One
 * request at a time: notify, then wait (sti; hlt, bounded by timer ticks)
 * until the used ring moves; the device's interrupt handler reads
 * InterruptStatus, acknowledges it and counts.  Queue memory: layout.h.
 */
#include "guest.h"

/* MMIO registers */
#define VIO_MAGIC 0x000
#define VIO_VERSION 0x004
#define VIO_DEVICE_ID 0x008
#define VIO_DEVICE_FEATURES 0x010
#define VIO_DEVICE_FEATURES_SEL 0x014
#define VIO_DRIVER_FEATURES 0x020
#define VIO_DRIVER_FEATURES_SEL 0x024
#define VIO_QUEUE_SEL 0x030
#define VIO_QUEUE_NUM_MAX 0x034
#define VIO_QUEUE_NUM 0x038
#define VIO_QUEUE_READY 0x044
#define VIO_QUEUE_NOTIFY 0x050
#define VIO_INTERRUPT_STATUS 0x060
#define VIO_INTERRUPT_ACK 0x064
#define VIO_STATUS 0x070
#define VIO_QUEUE_DESC_LOW 0x080
#define VIO_QUEUE_DESC_HIGH 0x084
#define VIO_QUEUE_DRIVER_LOW 0x090
#define VIO_QUEUE_DRIVER_HIGH 0x094
#define VIO_QUEUE_DEVICE_LOW 0x0a0
#define VIO_QUEUE_DEVICE_HIGH 0x0a4
#define VIO_CONFIG 0x100

#define VIRTIO_MAGIC 0x74726976   /* "virt" */

#define ST_ACKNOWLEDGE 1
#define ST_DRIVER 2
#define ST_DRIVER_OK 4
#define ST_FEATURES_OK 8
#define ST_FAILED 128

#define ID_NET 1
#define ID_BLK 2

#define F_VERSION_1_HI 1          /* feature bit 32, in the high word */
#define NET_F_MAC (1u << 5)
#define BLK_F_RO (1u << 5)
#define BLK_F_FLUSH (1u << 9)

#define VRING_DESC_F_NEXT 1
#define VRING_DESC_F_WRITE 2

#define BLK_T_IN 0
#define BLK_T_OUT 1
#define BLK_T_FLUSH 4
#define BLK_T_GET_ID 8
#define BLK_ID_BYTES 20
#define SECTOR 512

#define NET_HDR_LEN 12            /* struct virtio_net_hdr with VERSION_1 */
#define NET_RX_BUFS 8
#define NET_BUF_SIZE 2048
#define ETH_HLEN 14
#define ETH_ZLEN 60               /* minimum frame without the FCS */
#define ETH_FRAME_MAX 1514
#define NET_ETHERTYPE 0x88b5      /* IEEE local experimental */

/* slot offsets (layout.h) */
#define SLOT_QUEUE(q) ((u64)(q) * 0x1000)
#define Q_DESC 0x000
#define Q_AVAIL 0x100
#define Q_USED 0x200
#define SLOT_REQ 0x2000
#define REQ_HDR 0x000
#define REQ_STATUS 0x010
#define REQ_DATA 0x200
#define SLOT_RX 0x4000

/* Waits, in local APIC timer ticks (IRQ_TICK_MS each). */
#define BLK_WAIT_TICKS 500
#define TX_WAIT_TICKS 300
#define RX_WAIT_MS_DEFAULT 3000
#define RESET_SPINS 1000

#define MAX_CANDIDATES 32

struct vring_desc {
	u64 addr;
	u32 len;
	u16 flags;
	u16 next;
} __attribute__((packed));

struct vq {
	u64 desc, avail, used;
	u16 num;
	u16 avail_idx;   /* our copy of avail->idx */
	u16 last_used;   /* used entries consumed */
};

struct vdev {
	u64 base;
	u32 irq;         /* as given: GSI (ACPI) or ISA IRQ / GSI (command line) */
	u16 flags;       /* MPS INTI flags, 0 = default */
	u8 from_acpi;
	u32 device_id;
	int ready;
	const char *why; /* why it failed */
	int gsi;         /* routed GSI, -1 = polled */
	u64 mem;         /* its VIRTIO_SLOT_SIZE slot */
	struct vq q[2];
	volatile u32 irqs;
	volatile u32 isr;
	u32 features_lo; /* accepted, low word */
	u8 mac[6];
};

struct candidate {
	u64 base, size;
	u32 irq;
	u16 flags;
	u8 from_acpi;
};

extern u8 virtio_area[];

static struct candidate cands[MAX_CANDIDATES];
static u32 nr_cands;
static struct vdev devs[VIRTIO_MAX_DEVS];
static u32 nr_devs;

static u32 vr(const struct vdev *d, u32 reg)
{
	return mmio_read32(d->base + reg);
}

static void vw(const struct vdev *d, u32 reg, u32 v)
{
	mmio_write32(d->base + reg, v);
}

static void barrier(void)
{
	__asm__ volatile("" : : : "memory");
}

static void add_candidate(u64 base, u64 size, u32 irq, u16 flags, u8 from_acpi)
{
	for (u32 i = 0; i < nr_cands; i++)
		if (cands[i].base == base)
			return;
	if (nr_cands >= MAX_CANDIDATES)
		return;
	cands[nr_cands].base = base;
	cands[nr_cands].size = size;
	cands[nr_cands].irq = irq;
	cands[nr_cands].flags = flags;
	cands[nr_cands].from_acpi = from_acpi;
	nr_cands++;
}

void virtio_add_acpi(u64 base, u64 size, u32 gsi, u16 flags)
{
	add_candidate(base, size, gsi, flags, 1);
}

/* A number as Linux's memparse / %lli read it: 0x hex or decimal, with
 * an optional K/M/G suffix when `suffix`.  Returns the end or 0. */
static const char *parse_num(const char *s, int suffix, u64 *out)
{
	u64 v = 0;
	u32 base = 10, digits = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (;; s++) {
		u32 d;
		if (*s >= '0' && *s <= '9')
			d = (u32)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (u32)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (u32)(*s - 'A' + 10);
		else
			break;
		if (v >> 56)
			return 0;
		v = v * base + d;
		digits++;
	}
	if (!digits)
		return 0;
	if (suffix) {
		if (*s == 'K' || *s == 'k') {
			v <<= 10;
			s++;
		} else if (*s == 'M' || *s == 'm') {
			v <<= 20;
			s++;
		} else if (*s == 'G' || *s == 'g') {
			v <<= 30;
			s++;
		}
	}
	*out = v;
	return s;
}

/* virtio_mmio.device=<size>@<base>:<irq>[:<id>] */
static void parse_cmdline(void)
{
	static const char param[] = "virtio_mmio.device=";
	const char *cl = bootinfo.cmdline;
	size_t plen = sizeof(param) - 1;
	for (u32 i = 0; cl[i]; i++) {
		if ((i && cl[i - 1] != ' ') || strncmp(cl + i, param, plen))
			continue;
		const char *s = cl + i + plen;
		u64 size, base, irq;
		s = parse_num(s, 1, &size);
		if (!s || *s++ != '@')
			goto bad;
		s = parse_num(s, 0, &base);
		if (!s || *s++ != ':')
			goto bad;
		s = parse_num(s, 0, &irq);
		if (!s || irq > 0xffff || !size)
			goto bad;
		add_candidate(base, size, (u32)irq, 0, 0);
		continue;
bad:;
		char word[64];
		u32 n = 0;
		while (n < sizeof(word) - 1 && cl[i + n] && cl[i + n] != ' ') {
			word[n] = cl[i + n];
			n++;
		}
		word[n] = 0;
		kprintf("virtio: cannot parse %s\n", word);
	}
}

static const char *fail(struct vdev *d, const char *why)
{
	d->why = why;
	d->ready = 0;
	if (d->base)
		vw(d, VIO_STATUS, vr(d, VIO_STATUS) | ST_FAILED);
	return why;
}

static void vdev_irq(void *arg)
{
	struct vdev *d = arg;
	u32 s = vr(d, VIO_INTERRUPT_STATUS);
	if (s) {
		vw(d, VIO_INTERRUPT_ACK, s);
		d->isr |= s;
		d->irqs++;
	}
}

static u32 pow2_floor(u32 v)
{
	u32 p = 1;
	while (p <= v / 2)
		p <<= 1;
	return p;
}

static const char *setup_queue(struct vdev *d, u32 qi, u32 min_num)
{
	struct vq *q = &d->q[qi];
	vw(d, VIO_QUEUE_SEL, qi);
	if (vr(d, VIO_QUEUE_READY))
		return "queue already ready";
	u32 max = vr(d, VIO_QUEUE_NUM_MAX);
	if (!max)
		return qi ? "queue 1 size 0" : "queue 0 size 0";
	u32 num = pow2_floor(max < VIRTIO_QUEUE_SIZE ? max : VIRTIO_QUEUE_SIZE);
	if (num < min_num)
		return "queue too small";
	u64 m = d->mem + SLOT_QUEUE(qi);
	memset((void *)m, 0, 0x1000);
	q->desc = m + Q_DESC;
	q->avail = m + Q_AVAIL;
	q->used = m + Q_USED;
	q->num = (u16)num;
	q->avail_idx = 0;
	q->last_used = 0;
	vw(d, VIO_QUEUE_NUM, num);
	vw(d, VIO_QUEUE_DESC_LOW, (u32)q->desc);
	vw(d, VIO_QUEUE_DESC_HIGH, (u32)(q->desc >> 32));
	vw(d, VIO_QUEUE_DRIVER_LOW, (u32)q->avail);
	vw(d, VIO_QUEUE_DRIVER_HIGH, (u32)(q->avail >> 32));
	vw(d, VIO_QUEUE_DEVICE_LOW, (u32)q->used);
	vw(d, VIO_QUEUE_DEVICE_HIGH, (u32)(q->used >> 32));
	vw(d, VIO_QUEUE_READY, 1);
	return 0;
}

static struct vring_desc *desc(struct vq *q, u32 i)
{
	return (struct vring_desc *)(q->desc + (u64)i * sizeof(struct vring_desc));
}

static volatile u16 *avail_idx(struct vq *q)
{
	return (volatile u16 *)(q->avail + 2);
}

static volatile u16 *used_idx(struct vq *q)
{
	return (volatile u16 *)(q->used + 2);
}

/* Makes descriptor chain `head` available and notifies the device. */
static void vq_submit(struct vdev *d, u32 qi, u16 head)
{
	struct vq *q = &d->q[qi];
	volatile u16 *ring = (volatile u16 *)(q->avail + 4);
	ring[q->avail_idx % q->num] = head;
	barrier();
	q->avail_idx++;
	*avail_idx(q) = q->avail_idx;
	barrier();
	vw(d, VIO_QUEUE_NOTIFY, qi);
}

struct used_wait {
	struct vdev *d;
	struct vq *q;
	int need_irq;
};

static int used_moved(void *arg)
{
	struct used_wait *w = arg;
	if (w->d->gsi < 0) {
		/* polled: acknowledge here so the line does not stay up */
		u32 s = vr(w->d, VIO_INTERRUPT_STATUS);
		if (s)
			vw(w->d, VIO_INTERRUPT_ACK, s);
	} else if (w->need_irq && !(w->d->isr & 1)) {
		return 0;   /* interrupt-driven: wait for the used-buffer interrupt */
	}
	return *used_idx(w->q) != w->q->last_used;
}

/*
 * Waits for the next used entry of queue qi; returns 1 with *id / *len.
 * need_irq: the request was just submitted (after clearing d->isr), so
 * also wait for its interrupt; if that never comes but the used ring
 * moved, the entry is still taken when the wait runs out.
 */
static int vq_wait(struct vdev *d, u32 qi, u32 ticks, int need_irq, u32 *id, u32 *len)
{
	struct vq *q = &d->q[qi];
	struct used_wait w = { d, q, need_irq };
	if (!irq_wait(used_moved, &w, ticks) && *used_idx(q) == q->last_used)
		return 0;
	barrier();
	u64 e = q->used + 4 + (u64)(q->last_used % q->num) * 8;
	*id = *(volatile u32 *)e;
	*len = *(volatile u32 *)(e + 4);
	q->last_used++;
	return 1;
}

static void net_post_rx(struct vdev *d, u16 i)
{
	struct vring_desc *x = desc(&d->q[0], i);
	x->addr = d->mem + SLOT_RX + (u64)i * NET_BUF_SIZE;
	x->len = NET_BUF_SIZE;
	x->flags = VRING_DESC_F_WRITE;
	x->next = 0;
	vq_submit(d, 0, i);
}

static u32 net_rx_bufs(const struct vdev *d)
{
	return d->q[0].num < NET_RX_BUFS ? d->q[0].num : NET_RX_BUFS;
}

static const char *vdev_init(struct vdev *d)
{
	/* reset */
	vw(d, VIO_STATUS, 0);
	for (u32 i = 0; i < RESET_SPINS && vr(d, VIO_STATUS); i++)
		cpu_relax();
	if (vr(d, VIO_STATUS))
		return fail(d, "reset did not complete");
	vw(d, VIO_STATUS, ST_ACKNOWLEDGE);
	vw(d, VIO_STATUS, ST_ACKNOWLEDGE | ST_DRIVER);

	vw(d, VIO_DEVICE_FEATURES_SEL, 1);
	u32 hi = vr(d, VIO_DEVICE_FEATURES);
	vw(d, VIO_DEVICE_FEATURES_SEL, 0);
	u32 lo = vr(d, VIO_DEVICE_FEATURES);
	if (!(hi & F_VERSION_1_HI))
		return fail(d, "no VIRTIO_F_VERSION_1");
	u32 want = d->device_id == ID_NET ? NET_F_MAC : BLK_F_RO | BLK_F_FLUSH;
	d->features_lo = lo & want;
	vw(d, VIO_DRIVER_FEATURES_SEL, 0);
	vw(d, VIO_DRIVER_FEATURES, d->features_lo);
	vw(d, VIO_DRIVER_FEATURES_SEL, 1);
	vw(d, VIO_DRIVER_FEATURES, F_VERSION_1_HI);
	vw(d, VIO_STATUS, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK);
	if (!(vr(d, VIO_STATUS) & ST_FEATURES_OK))
		return fail(d, "FEATURES_OK not kept");

	const char *e = setup_queue(d, 0, d->device_id == ID_BLK ? 3 : 1);
	if (!e && d->device_id == ID_NET)
		e = setup_queue(d, 1, 1);
	if (e)
		return fail(d, e);

	if (d->device_id == ID_NET) {
		if (d->features_lo & NET_F_MAC) {
			for (u32 i = 0; i < 6; i++)
				d->mac[i] = *(volatile u8 *)(d->base + VIO_CONFIG + i);
		} else {
			/* locally administered, unicast */
			static const u8 def[6] = { 0x02, 0x6b, 0x76, 0x6d, 0x00, 0x00 };
			memcpy(d->mac, def, 6);
			d->mac[5] = (u8)(d - devs);
		}
	}

	/* the interrupt, before DRIVER_OK */
	u32 vec = VEC_VIRTIO_BASE + (u32)(d - devs);
	irq_set_handler(vec, vdev_irq, d);
	d->gsi = irq_route(d->irq, d->from_acpi, d->flags, vec);

	vw(d, VIO_STATUS, ST_ACKNOWLEDGE | ST_DRIVER | ST_FEATURES_OK | ST_DRIVER_OK);
	d->ready = 1;
	if (d->device_id == ID_NET)
		for (u16 i = 0; i < net_rx_bufs(d); i++)
			net_post_rx(d, i);
	return 0;
}

static const char *probe(const struct candidate *c, u32 *id)
{
	*id = 0;
	if (!phys_ok(c->base, 0x200) || (c->base & 3))
		return "bad address";
	if (mmio_read32(c->base + VIO_MAGIC) != VIRTIO_MAGIC)
		return "bad magic";
	u32 ver = mmio_read32(c->base + VIO_VERSION);
	*id = mmio_read32(c->base + VIO_DEVICE_ID);
	if (ver == 1)
		return "legacy transport (version 1)";
	if (ver != 2)
		return "unknown transport version";
	return 0;
}

void virtio_init(void)
{
	parse_cmdline();
	for (u32 i = 0; i < nr_cands && nr_devs < VIRTIO_MAX_DEVS; i++) {
		const struct candidate *c = &cands[i];
		u32 id;
		const char *why = probe(c, &id);
		/* the DSDT lists every transport, most of them empty */
		if (c->from_acpi && (why || !id))
			continue;
		struct vdev *d = &devs[nr_devs++];
		d->base = c->base;
		d->irq = c->irq;
		d->flags = c->flags;
		d->from_acpi = c->from_acpi;
		d->device_id = id;
		d->gsi = -1;
		d->mem = (u64)virtio_area + (u64)(d - devs) * VIRTIO_SLOT_SIZE;
		if (why) {
			d->base = 0;     /* do not touch it again */
			d->why = why;
		} else if (!id) {
			d->why = "no device (id 0)";
		} else if (id != ID_NET && id != ID_BLK) {
			d->why = "no driver";
		} else {
			vdev_init(d);
		}
		d->base = c->base;
	}
	if (nr_devs)
		virtio_list();
}

static const char *type_name(u32 id, char *buf)
{
	if (id == ID_BLK)
		return "blk";
	if (id == ID_NET)
		return "net";
	/* "unknown id N" */
	memcpy(buf, "unknown id ", 11);
	char tmp[12];
	int n = 0;
	do {
		tmp[n++] = (char)('0' + id % 10);
		id /= 10;
	} while (id);
	int k = 11;
	while (n)
		buf[k++] = tmp[--n];
	buf[k] = 0;
	return buf;
}

void virtio_list(void)
{
	if (!nr_devs) {
		kprintf("virtio: no devices\n");
		return;
	}
	for (u32 i = 0; i < nr_devs; i++) {
		struct vdev *d = &devs[i];
		char buf[32];
		if (d->ready)
			kprintf("virtio: 0x%lx irq %u %s ready\n", d->base, d->irq,
				type_name(d->device_id, buf));
		else
			kprintf("virtio: 0x%lx irq %u %s failed: %s\n", d->base, d->irq,
				type_name(d->device_id, buf), d->why ? d->why : "?");
	}
}

static struct vdev *find_dev(u32 id)
{
	for (u32 i = 0; i < nr_devs; i++)
		if (devs[i].device_id == id && devs[i].ready)
			return &devs[i];
	return 0;
}

static char printable(u8 c)
{
	return c >= 0x20 && c < 0x7f ? (char)c : '.';
}

/* ---- virtio-blk ---- */

/* One request; returns the status byte, or -1 on a timeout. */
static int blk_request(struct vdev *d, u32 type, u64 sector, u32 len, int data_in)
{
	struct vq *q = &d->q[0];
	u64 req = d->mem + SLOT_REQ;
	volatile u8 *status = (volatile u8 *)(req + REQ_STATUS);
	*(volatile u32 *)(req + REQ_HDR) = type;
	*(volatile u32 *)(req + REQ_HDR + 4) = 0;
	*(volatile u64 *)(req + REQ_HDR + 8) = sector;
	*status = 0xff;
	struct vring_desc *x = desc(q, 0);
	x->addr = req + REQ_HDR;
	x->len = 16;
	x->flags = VRING_DESC_F_NEXT;
	x->next = 1;
	u16 st = 1;
	if (len) {
		x = desc(q, 1);
		x->addr = req + REQ_DATA;
		x->len = len;
		x->flags = VRING_DESC_F_NEXT | (data_in ? VRING_DESC_F_WRITE : 0);
		x->next = 2;
		st = 2;
	}
	x = desc(q, st);
	x->addr = req + REQ_STATUS;
	x->len = 1;
	x->flags = VRING_DESC_F_WRITE;
	x->next = 0;
	d->isr = 0;
	vq_submit(d, 0, 0);
	u32 id, ulen;
	if (!vq_wait(d, 0, BLK_WAIT_TICKS, 1, &id, &ulen)) {
		fail(d, "request timed out");
		return -1;
	}
	return *status;
}

static void cmd_blk_read(struct vdev *d, char *arg)
{
	u64 sector;
	if (!*arg || !parse_u64(arg, 10, &sector)) {
		kprintf("usage: blk read SECTOR\n");
		return;
	}
	u8 *data = (u8 *)(d->mem + SLOT_REQ + REQ_DATA);
	memset(data, 0, SECTOR);
	int s = blk_request(d, BLK_T_IN, sector, SECTOR, 1);
	if (s < 0) {
		kprintf("blk: sector %lu status timeout\n", sector);
		return;
	}
	if (s) {
		kprintf("blk: sector %lu status %d\n", sector, s);
		return;
	}
	char text[65], hex[33];
	for (u32 i = 0; i < 64; i++)
		text[i] = printable(data[i]);
	text[64] = 0;
	for (u32 i = 0; i < 16; i++) {
		hex[2 * i] = "0123456789abcdef"[data[i] >> 4];
		hex[2 * i + 1] = "0123456789abcdef"[data[i] & 15];
	}
	hex[32] = 0;
	kprintf("blk: sector %lu status 0 data %s hex %s\n", sector, text, hex);
}

static void cmd_blk_write(struct vdev *d, char *args)
{
	while (*args == ' ')
		args++;
	char *num = args;
	while (*args && *args != ' ')
		args++;
	if (*args)
		*args++ = 0;
	u64 sector;
	if (!*num || !parse_u64(num, 10, &sector)) {
		kprintf("usage: blk write SECTOR TEXT\n");
		return;
	}
	u8 *data = (u8 *)(d->mem + SLOT_REQ + REQ_DATA);
	memset(data, 0, SECTOR);
	size_t n = strlen(args);
	memcpy(data, args, n < SECTOR ? n : SECTOR);
	int s = blk_request(d, BLK_T_OUT, sector, SECTOR, 0);
	if (s < 0)
		kprintf("blk: write sector %lu status timeout\n", sector);
	else
		kprintf("blk: write sector %lu status %d\n", sector, s);
}

static void cmd_blk_id(struct vdev *d)
{
	u8 *data = (u8 *)(d->mem + SLOT_REQ + REQ_DATA);
	memset(data, 0, SECTOR);
	int s = blk_request(d, BLK_T_GET_ID, 0, BLK_ID_BYTES, 1);
	if (s) {
		if (s < 0)
			kprintf("blk: id status timeout\n");
		else
			kprintf("blk: id status %d\n", s);
		return;
	}
	char id[BLK_ID_BYTES + 1];
	u32 n = 0;
	while (n < BLK_ID_BYTES && data[n]) {
		id[n] = printable(data[n]);
		n++;
	}
	id[n] = 0;
	kprintf("blk: id %s\n", id);
}

void cmd_blk(char *args)
{
	while (*args == ' ')
		args++;
	char *sub = args;
	while (*args && *args != ' ')
		args++;
	if (*args)
		*args++ = 0;
	struct vdev *d = find_dev(ID_BLK);
	if (strcmp(sub, "read") && strcmp(sub, "write") && strcmp(sub, "id") && strcmp(sub, "flush")) {
		kprintf("usage: blk read SECTOR | blk write SECTOR TEXT | blk id | blk flush\n");
		return;
	}
	if (!d) {
		kprintf("blk: no device\n");
		return;
	}
	while (*args == ' ')
		args++;
	if (!strcmp(sub, "read")) {
		cmd_blk_read(d, args);
	} else if (!strcmp(sub, "write")) {
		cmd_blk_write(d, args);
	} else if (!strcmp(sub, "id")) {
		cmd_blk_id(d);
	} else {
		int s = blk_request(d, BLK_T_FLUSH, 0, 0, 0);
		if (s < 0)
			kprintf("blk: flush status timeout\n");
		else
			kprintf("blk: flush status %d\n", s);
	}
}

/* ---- virtio-net ---- */
static void print_mac(const char *prefix, const u8 *m)
{
	kprintf("%s%02x:%02x:%02x:%02x:%02x:%02x", prefix, m[0], m[1], m[2], m[3], m[4], m[5]);
}

static void cmd_net_send(struct vdev *d, const char *text)
{
	u8 *buf = (u8 *)(d->mem + SLOT_REQ);
	size_t n = strlen(text);
	if (n > ETH_FRAME_MAX - ETH_HLEN)
		n = ETH_FRAME_MAX - ETH_HLEN;
	u32 flen = (u32)(ETH_HLEN + n);
	if (flen < ETH_ZLEN)
		flen = ETH_ZLEN;
	memset(buf, 0, NET_HDR_LEN + flen);
	u8 *f = buf + NET_HDR_LEN;
	memset(f, 0xff, 6);
	memcpy(f + 6, d->mac, 6);
	f[12] = NET_ETHERTYPE >> 8;
	f[13] = NET_ETHERTYPE & 0xff;
	memcpy(f + ETH_HLEN, text, n);
	struct vq *q = &d->q[1];
	struct vring_desc *x = desc(q, 0);
	x->addr = (u64)buf;
	x->len = NET_HDR_LEN + flen;
	x->flags = 0;
	x->next = 0;
	d->isr = 0;
	vq_submit(d, 1, 0);
	u32 id, len;
	if (!vq_wait(d, 1, TX_WAIT_TICKS, 1, &id, &len)) {
		fail(d, "transmit timed out");
		kprintf("net: send timeout\n");
		return;
	}
	kprintf("net: sent %u bytes\n", flen);
}

static void cmd_net_recv(struct vdev *d, char *arg)
{
	u64 ms = RX_WAIT_MS_DEFAULT;
	if (*arg && !parse_u64(arg, 10, &ms)) {
		kprintf("usage: net recv [MS]\n");
		return;
	}
	if (ms > 600000)
		ms = 600000;
	u32 id, len;
	/* frames may have arrived (and interrupted) before: no need_irq */
	if (!vq_wait(d, 0, (u32)((ms + IRQ_TICK_MS - 1) / IRQ_TICK_MS), 0, &id, &len)) {
		kprintf("net: recv timeout\n");
		return;
	}
	if (id >= net_rx_bufs(d)) {
		fail(d, "bad used id");
		kprintf("net: recv bad buffer id %u\n", id);
		return;
	}
	const u8 *f = (const u8 *)(d->mem + SLOT_RX + (u64)id * NET_BUF_SIZE + NET_HDR_LEN);
	u32 flen = len > NET_HDR_LEN ? len - NET_HDR_LEN : 0;
	if (flen > NET_BUF_SIZE - NET_HDR_LEN)
		flen = NET_BUF_SIZE - NET_HDR_LEN;
	char payload[65];
	u32 plen = 0;
	if (flen >= ETH_HLEN) {
		u32 end = flen;
		while (end > ETH_HLEN && !f[end - 1])
			end--;   /* padding */
		for (u32 i = ETH_HLEN; i < end && plen < 64; i++)
			payload[plen++] = printable(f[i]);
	}
	payload[plen] = 0;
	if (flen < ETH_HLEN) {
		kprintf("net: recv %u bytes (runt)\n", flen);
	} else {
		kprintf("net: recv %u bytes from ", flen);
		print_mac("", f + 6);
		kprintf(" type 0x%04x payload %s\n", ((u32)f[12] << 8) | f[13], payload);
	}
	net_post_rx(d, (u16)id);
}

void cmd_net(char *args)
{
	while (*args == ' ')
		args++;
	char *sub = args;
	while (*args && *args != ' ')
		args++;
	if (*args)
		*args++ = 0;
	while (*args == ' ')
		args++;
	if (strcmp(sub, "mac") && strcmp(sub, "send") && strcmp(sub, "recv")) {
		kprintf("usage: net mac | net send TEXT | net recv [MS]\n");
		return;
	}
	struct vdev *d = find_dev(ID_NET);
	if (!d) {
		kprintf("net: no device\n");
		return;
	}
	if (!strcmp(sub, "mac")) {
		print_mac("net: mac ", d->mac);
		kprintf("\n");
	} else if (!strcmp(sub, "send")) {
		cmd_net_send(d, args);
	} else {
		cmd_net_recv(d, args);
	}
}

void cmd_irqs(void)
{
	u32 blk = 0, net = 0;
	for (u32 i = 0; i < nr_devs; i++) {
		if (devs[i].device_id == ID_BLK)
			blk += devs[i].irqs;
		else if (devs[i].device_id == ID_NET)
			net += devs[i].irqs;
	}
	kprintf("irqs: blk %u net %u timer %u com1 %u other %u spurious %u sci %u\n", blk, net,
		timer_ticks, com1_irqs, other_irqs, spurious_irqs, sci_irqs);
}
