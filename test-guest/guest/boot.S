/* SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause */
/*
 * kvmkit test guest: entry points, GDT, page tables, stacks, exception
 * stubs and the real-mode AP trampoline.
 *
 * Two ways in:
 *   _start64     ELF e_entry: 64-bit Linux boot protocol entry.  Long mode,
 *                paging on (identity map set up by the VMM), %rsi = physical
 *                address of struct boot_params.
 *   pvh_start32  Xen PVH entry (XEN_ELFNOTE_PHYS32_ENTRY): 32-bit protected
 *                mode, paging off, %ebx = physical address of
 *                struct hvm_start_info.
 * Both load our own GDT and stack, zero .bss, build identity page tables for
 * [0, 4 GiB) with 2 MiB pages and call kmain(kind, info).
 */
#include "layout.h"

#define MSR_EFER 0xc0000080
#define EFER_LME 0x100
#define CR0_PE 0x1
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define PTE_P_RW 0x3
#define PTE_LARGE 0x83	/* present, writable, 2 MiB page */

/* ------------------------------------------------------------------ */
/* Xen PVH entry note: name "Xen", type 18, desc = 32-bit entry address. */
	.section .note.Xen, "a", @note
	.balign 4
	.long 4				/* namesz */
	.long 4				/* descsz */
	.long 18			/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.balign 4
	.long pvh_start32
	.balign 4

/* ------------------------------------------------------------------ */
	.section .text.entry, "ax"

	.code64
	.globl _start64
	.type _start64, @function
_start64:
	cli
	cld
	movq %rsi, %r12			/* struct boot_params * */
	leaq bsp_stack_top(%rip), %rsp
	lgdt gdt_ptr(%rip)
	pushq $SEL_CODE64
	leaq 1f(%rip), %rax
	pushq %rax
	lretq
1:	movl $SEL_DATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs

	/* zero .bss (the stacks are in .stacks and stay as they are) */
	leaq __bss_start(%rip), %rdi
	leaq __bss_end(%rip), %rcx
	subq %rdi, %rcx
	shrq $3, %rcx
	xorl %eax, %eax
	rep stosq

	/* PML4[0] -> PDPT */
	leaq boot_pdpt(%rip), %rax
	orq $PTE_P_RW, %rax
	movq %rax, boot_pml4(%rip)
	/* PDPT[0..3] -> PD[0..3] */
	leaq boot_pdpt(%rip), %rdi
	leaq boot_pd(%rip), %rax
	orq $PTE_P_RW, %rax
	movl $4, %ecx
2:	movq %rax, (%rdi)
	addq $8, %rdi
	addq $0x1000, %rax
	decl %ecx
	jnz 2b
	/* PD entries: 2048 x 2 MiB = 4 GiB identity */
	leaq boot_pd(%rip), %rdi
	movl $PTE_LARGE, %eax
	movl $2048, %ecx
3:	movq %rax, (%rdi)
	addq $8, %rdi
	addq $0x200000, %rax
	decl %ecx
	jnz 3b
	leaq boot_pml4(%rip), %rax
	movq %rax, %cr3

	movl $BOOT_KIND_LINUX64, %edi
	movq %r12, %rsi
	call kmain
4:	cli
	hlt
	jmp 4b
	.size _start64, . - _start64

	.code32
	.globl pvh_start32
	.type pvh_start32, @function
pvh_start32:
	cli
	cld
	movl %ebx, %esi			/* struct hvm_start_info * */
	lgdt gdt_ptr
	ljmp $SEL_CODE32, $1f
1:	movl $SEL_DATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	movl $bsp_stack_top, %esp

	movl $__bss_start, %edi
	movl $__bss_end, %ecx
	subl %edi, %ecx
	shrl $2, %ecx
	xorl %eax, %eax
	rep stosl

	movl $(boot_pdpt + PTE_P_RW), boot_pml4
	movl $boot_pdpt, %edi
	movl $(boot_pd + PTE_P_RW), %eax
	movl $4, %ecx
2:	movl %eax, (%edi)
	addl $8, %edi
	addl $0x1000, %eax
	decl %ecx
	jnz 2b
	movl $boot_pd, %edi
	movl $PTE_LARGE, %eax
	xorl %edx, %edx
	movl $2048, %ecx
3:	movl %eax, (%edi)
	movl %edx, 4(%edi)
	addl $8, %edi
	addl $0x200000, %eax
	adcl $0, %edx
	decl %ecx
	jnz 3b

	movl %cr4, %eax
	orl $CR4_PAE, %eax
	movl %eax, %cr4
	movl $boot_pml4, %eax
	movl %eax, %cr3
	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	wrmsr
	movl %cr0, %eax
	orl $(CR0_PG | CR0_PE), %eax
	movl %eax, %cr0
	ljmp $SEL_CODE64, $pvh_long

	.code64
pvh_long:
	movl $SEL_DATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	leaq bsp_stack_top(%rip), %rsp
	movl %esi, %esi			/* zero-extend the start_info pointer */
	movl $BOOT_KIND_PVH, %edi
	call kmain
4:	cli
	hlt
	jmp 4b
	.size pvh_start32, . - pvh_start32

/*
 * APs arrive here in long mode from the trampoline, on its temporary GDT
 * and without a stack.  Load the real GDT, claim a stack slot and call
 * ap_main(slot).
 */
	.globl ap_entry64
	.type ap_entry64, @function
ap_entry64:
	lgdt gdt_ptr(%rip)
	movl $SEL_DATA, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	movl $1, %eax
	lock xaddl %eax, ap_stack_next(%rip)
	cmpl $(MAX_CPUS - 1), %eax
	jae 9f
	movl %eax, %edi
	incl %eax
	imull $AP_STACK_SIZE, %eax, %eax
	leaq ap_stacks(%rip), %rsp
	addq %rax, %rsp
	pushq $SEL_CODE64
	leaq 1f(%rip), %rax
	pushq %rax
	lretq
1:	call ap_main
9:	cli
	hlt
	jmp 9b
	.size ap_entry64, . - ap_entry64

/* ------------------------------------------------------------------ */
/*
 * Exception / interrupt stubs: 256 stubs, 16 bytes apart, starting at
 * isr_stubs.  Each pushes a dummy error code if the CPU does not push
 * one, then the vector, and jumps to isr_common which saves the GPRs and
 * calls interrupt_entry(frame) (irq.c).  Exceptions (vectors 0-31) do not
 * return from it; device interrupts do, and isr_common restores the GPRs
 * and returns with iretq.  Interrupts only arrive while the BSP waits in
 * sti; hlt, on the interrupted (BSP) stack; the kernel has no red zone.
 */
	.text
	.balign 16
	.globl isr_stubs
isr_stubs:
	.set vec, 0
	.rept 256
	.balign 16
	.if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0
	.endif
	pushq $vec
	jmp isr_common
	.set vec, vec + 1
	.endr

isr_common:
	pushq %rax
	pushq %rbx
	pushq %rcx
	pushq %rdx
	pushq %rsi
	pushq %rdi
	pushq %rbp
	pushq %r8
	pushq %r9
	pushq %r10
	pushq %r11
	pushq %r12
	pushq %r13
	pushq %r14
	pushq %r15
	movq %rsp, %rdi
	movq %rsp, %rbx			/* callee-saved: the frame */
	andq $-16, %rsp
	call interrupt_entry		/* exceptions do not return */
	movq %rbx, %rsp
	popq %r15
	popq %r14
	popq %r13
	popq %r12
	popq %r11
	popq %r10
	popq %r9
	popq %r8
	popq %rbp
	popq %rdi
	popq %rsi
	popq %rdx
	popq %rcx
	popq %rbx
	popq %rax
	addq $16, %rsp			/* vector, error code */
	iretq

/* ------------------------------------------------------------------ */
/*
 * Real-mode AP trampoline.  Copied to TRAMPOLINE_ADDR; the SIPI vector
 * TRAMPOLINE_ADDR >> 12 starts the AP at CS:IP = (TRAMPOLINE_ADDR >> 4):0.
 * Real mode -> 32-bit protected mode -> long mode on the BSP's page
 * tables -> ap_entry64.  Position-dependent: every address in it is
 * computed for TRAMPOLINE_ADDR.
 */
#define T(sym) ((sym) - trampoline_start + TRAMPOLINE_ADDR)

	.section .trampoline, "a"
	.globl trampoline_start, trampoline_end
	.code16
trampoline_start:
	cli
	cld
	movw %cs, %ax
	movw %ax, %ds
	lgdtl (tr_gdt_ptr - trampoline_start)
	movl %cr0, %eax
	orl $CR0_PE, %eax
	movl %eax, %cr0
	ljmpl $0x08, $T(tr_pm32)

	.code32
tr_pm32:
	movl $0x10, %eax
	movl %eax, %ds
	movl %eax, %es
	movl %eax, %ss
	movl %eax, %fs
	movl %eax, %gs
	movl %cr4, %eax
	orl $CR4_PAE, %eax
	movl %eax, %cr4
	movl $boot_pml4, %eax
	movl %eax, %cr3
	movl $MSR_EFER, %ecx
	rdmsr
	orl $EFER_LME, %eax
	wrmsr
	movl %cr0, %eax
	orl $(CR0_PG | CR0_PE), %eax
	movl %eax, %cr0
	ljmp $0x18, $T(tr_lm64)

	.code64
tr_lm64:
	movabsq $ap_entry64, %rax
	jmp *%rax

	.balign 8
tr_gdt:
	.quad 0
	.quad 0x00cf9a000000ffff	/* 0x08: 32-bit code, flat */
	.quad 0x00cf92000000ffff	/* 0x10: data, flat */
	.quad 0x00af9a000000ffff	/* 0x18: 64-bit code */
tr_gdt_end:
tr_gdt_ptr:
	.word tr_gdt_end - tr_gdt - 1
	.long T(tr_gdt)
trampoline_end:

/* ------------------------------------------------------------------ */
	.section .rodata
	.balign 16
gdt:
	.quad 0
	.quad 0x00af9a000000ffff	/* SEL_CODE64 */
	.quad 0x00cf92000000ffff	/* SEL_DATA */
	.quad 0x00cf9a000000ffff	/* SEL_CODE32 (PVH entry only) */
gdt_end:
	.balign 8
gdt_ptr:
	.word gdt_end - gdt - 1
	.quad gdt

/* ------------------------------------------------------------------ */
	.section .bss.pagetables, "aw", @nobits
	.balign 4096
	.globl boot_pml4, boot_pdpt, boot_pd
boot_pml4:
	.skip 4096
boot_pdpt:
	.skip 4096
boot_pd:
	.skip 4 * 4096

	.section .bss
	.balign 4
ap_stack_next:
	.skip 4

	.section .stacks, "aw", @nobits
	.balign 4096
bsp_stack:
	.skip BSP_STACK_SIZE
bsp_stack_top:
	.globl ap_stacks
ap_stacks:
	.skip (MAX_CPUS - 1) * AP_STACK_SIZE

/* virtio-mmio queues and buffers (layout.h); link.ld places it at
 * VIRTIO_AREA_ADDR. */
	.section .virtio_area, "aw", @nobits
	.balign 4096
	.globl virtio_area
virtio_area:
	.skip VIRTIO_MAX_DEVS * VIRTIO_SLOT_SIZE

	.section .note.GNU-stack, "", @progbits
