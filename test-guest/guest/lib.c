/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: string helpers, spinlocks, COM1 and kprintf.
 */
#include "guest.h"

/* ---- memory and strings (gcc may emit calls to the first four) ---- */
void *memcpy(void *dst, const void *src, size_t n)
{
	u8 *d = dst;
	const u8 *s = src;
	while (n--)
		*d++ = *s++;
	return dst;
}

void *memset(void *dst, int c, size_t n)
{
	u8 *d = dst;
	while (n--)
		*d++ = (u8)c;
	return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
	u8 *d = dst;
	const u8 *s = src;
	if (d < s) {
		while (n--)
			*d++ = *s++;
	} else {
		while (n--)
			d[n] = s[n];
	}
	return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
	const u8 *x = a, *y = b;
	for (size_t i = 0; i < n; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

size_t strlen(const char *s)
{
	size_t n = 0;
	while (s[n])
		n++;
	return n;
}

int strcmp(const char *a, const char *b)
{
	while (*a && *a == *b) {
		a++;
		b++;
	}
	return (u8)*a - (u8)*b;
}

int strncmp(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (a[i] != b[i])
			return (u8)a[i] - (u8)b[i];
		if (!a[i])
			return 0;
	}
	return 0;
}

/* ---- spinlocks: xchg only ---- */
void spin_lock(volatile u32 *lock)
{
	while (__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE)) {
		while (*lock)
			cpu_relax();
	}
}

/* Returns 1 with the lock held, 0 if it stayed busy for `spins` tries. */
int spin_trylock_bounded(volatile u32 *lock, u32 spins)
{
	for (u32 i = 0; i < spins; i++) {
		if (!__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
			return 1;
		cpu_relax();
	}
	return 0;
}

void spin_unlock(volatile u32 *lock)
{
	__atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

void delay(u32 loops)
{
	for (u32 i = 0; i < loops; i++)
		cpu_relax();
}

/* ---- COM1, 8250/16550: polled output, polled or interrupt-driven input ---- */
#define COM1 0x3f8
#define UART_RBR 0
#define UART_THR 0
#define UART_IER 1
#define UART_DLL 0
#define UART_DLM 1
#define UART_FCR 2
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define LSR_DR 0x01
#define LSR_THRE 0x20
#define UART_FIFO_SIZE 16
#define THRE_SPINS 2000  /* emulated UARTs are always ready; bounded for broken ones */

/* Bytes that were already waiting before serial_init (see there). */
static u8 early_rx[UART_FIFO_SIZE];
static u32 early_rx_len, early_rx_pos;

/* Bytes taken by the receive interrupt handler (BSP only, and only ever
 * touched with interrupts off or from the handler itself). */
#define RX_RING 256
static u8 rx_ring[RX_RING];
static volatile u32 rx_head, rx_tail;

void serial_init(void)
{
	/*
	 * Enabling the FIFO clears it, dropping input the host sent before
	 * we got here (a test harness may type ahead): keep those bytes.
	 */
	for (u32 i = 0; i < UART_FIFO_SIZE; i++) {
		u8 lsr = inb(COM1 + UART_LSR);
		if (lsr == 0xff || !(lsr & LSR_DR))
			break;
		early_rx[early_rx_len++] = inb(COM1 + UART_RBR);
	}
	outb(COM1 + UART_IER, 0x00);   /* no interrupts */
	outb(COM1 + UART_LCR, 0x80);   /* DLAB */
	outb(COM1 + UART_DLL, 0x01);   /* 115200 baud */
	outb(COM1 + UART_DLM, 0x00);
	outb(COM1 + UART_LCR, 0x03);   /* 8N1 */
	outb(COM1 + UART_FCR, 0xc1);   /* FIFO on, 14-byte trigger */
	outb(COM1 + UART_MCR, 0x03);   /* DTR | RTS */
}

/*
 * One LSR read per FIFO-full of output: with the FIFO on, THRE means the
 * whole transmit FIFO is empty.  Every port access is a VM exit, so this
 * roughly halves the cost of printing.
 */
void serial_write(const char *s, size_t n)
{
	while (n) {
		for (u32 i = 0; i < THRE_SPINS; i++) {
			u8 lsr = inb(COM1 + UART_LSR);
			if ((lsr & LSR_THRE) || lsr == 0xff)
				break;
			cpu_relax();
		}
		size_t chunk = n < UART_FIFO_SIZE ? n : UART_FIFO_SIZE;
		for (size_t i = 0; i < chunk; i++)
			outb(COM1 + UART_THR, (u8)s[i]);
		s += chunk;
		n -= chunk;
	}
}

void serial_enable_rx_irq(void)
{
	outb(COM1 + UART_MCR, 0x0b);   /* DTR | RTS | OUT2 (the IRQ gate on PCs) */
	outb(COM1 + UART_IER, 0x01);   /* received data available */
}

void serial_irq(void *arg)
{
	(void)arg;
	com1_irqs++;
	for (u32 i = 0; i < UART_FIFO_SIZE; i++) {
		u8 lsr = inb(COM1 + UART_LSR);
		if (lsr == 0xff || !(lsr & LSR_DR))
			break;
		u8 c = inb(COM1 + UART_RBR);
		if (rx_head - rx_tail < RX_RING) {
			rx_ring[rx_head % RX_RING] = c;
			rx_head++;
		}
	}
}

int serial_getc(void)
{
	if (early_rx_pos < early_rx_len)
		return early_rx[early_rx_pos++];
	if (rx_tail != rx_head) {
		u8 c = rx_ring[rx_tail % RX_RING];
		rx_tail++;
		return c;
	}
	u8 lsr = inb(COM1 + UART_LSR);
	if (lsr == 0xff || !(lsr & LSR_DR))
		return -1;
	return inb(COM1 + UART_RBR);
}

/* ---- kprintf ---- */
volatile u32 print_lock;

struct outbuf {
	char buf[128];
	u32 len;
};

static void ob_flush(struct outbuf *o)
{
	serial_write(o->buf, o->len);
	o->len = 0;
}

static void ob_putc(struct outbuf *o, char c)
{
	if (c == '\n') {
		if (o->len + 2 > sizeof(o->buf))
			ob_flush(o);
		o->buf[o->len++] = '\r';
		o->buf[o->len++] = '\n';
		return;
	}
	if (o->len + 1 > sizeof(o->buf))
		ob_flush(o);
	o->buf[o->len++] = c;
}

static void ob_num(struct outbuf *o, u64 v, u32 base, int width, char pad, int neg)
{
	char tmp[24];
	int n = 0;
	do {
		u32 d = (u32)(v % base);
		tmp[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
		v /= base;
	} while (v && n < (int)sizeof(tmp));
	if (neg) {
		if (pad == '0')
			ob_putc(o, '-');
		width--;
	}
	for (int i = n; i < width && i < 64; i++)
		ob_putc(o, pad);
	if (neg && pad != '0')
		ob_putc(o, '-');
	while (n)
		ob_putc(o, tmp[--n]);
}

static void vformat(struct outbuf *o, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			ob_putc(o, *fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		int width = 0, lng = 0;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		while (*fmt == 'l') {
			lng = 1;
			fmt++;
		}
		switch (*fmt) {
		case 'd': {
			int64_t v = lng ? va_arg(ap, int64_t) : va_arg(ap, int);
			ob_num(o, v < 0 ? (u64)0 - (u64)v : (u64)v, 10, width, pad, v < 0);
			break;
		}
		case 'u':
			ob_num(o, lng ? va_arg(ap, u64) : va_arg(ap, u32), 10, width, pad, 0);
			break;
		case 'x':
			ob_num(o, lng ? va_arg(ap, u64) : va_arg(ap, u32), 16, width, pad, 0);
			break;
		case 'p':
			ob_putc(o, '0');
			ob_putc(o, 'x');
			ob_num(o, (u64)va_arg(ap, void *), 16, 16, '0', 0);
			break;
		case 'c':
			ob_putc(o, (char)va_arg(ap, int));
			break;
		case 's': {
			const char *s = va_arg(ap, const char *);
			if (!s)
				s = "(null)";
			while (*s)
				ob_putc(o, *s++);
			break;
		}
		case '%':
			ob_putc(o, '%');
			break;
		case 0:
			return;
		default:
			ob_putc(o, '%');
			ob_putc(o, *fmt);
			break;
		}
	}
}

void kprintf(const char *fmt, ...)
{
	struct outbuf o;
	va_list ap;
	o.len = 0;
	spin_lock(&print_lock);
	va_start(ap, fmt);
	vformat(&o, fmt, ap);
	va_end(ap);
	ob_flush(&o);
	spin_unlock(&print_lock);
}

/* For the exception handler, which may have interrupted a lock holder. */
void kprintf_nolock(const char *fmt, ...)
{
	struct outbuf o;
	va_list ap;
	o.len = 0;
	va_start(ap, fmt);
	vformat(&o, fmt, ap);
	va_end(ap);
	ob_flush(&o);
}

/* Parses an unsigned number; base 16 also accepts a 0x prefix, base 10
 * switches to hex on a 0x prefix.  Returns 1 on success. */
int parse_u64(const char *s, int base, u64 *out)
{
	u64 v = 0;
	int digits = 0;
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (; *s; s++) {
		u32 d;
		if (*s >= '0' && *s <= '9')
			d = (u32)(*s - '0');
		else if (*s >= 'a' && *s <= 'f')
			d = (u32)(*s - 'a' + 10);
		else if (*s >= 'A' && *s <= 'F')
			d = (u32)(*s - 'A' + 10);
		else if (*s == '_')
			continue;
		else
			return 0;
		if (d >= (u32)base)
			return 0;
		if (v > (~(u64)0 - d) / (u64)base)
			return 0;  /* overflow */
		v = v * (u64)base + d;
		digits++;
	}
	if (!digits)
		return 0;
	*out = v;
	return 1;
}
