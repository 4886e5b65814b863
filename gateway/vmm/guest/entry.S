/* entry.S: the demo guest's only ring-0 code.  The VMM already put the vCPU
 * in 64-bit mode with a GDT, TSS and identity page tables; we install the
 * exception stubs (#GP doubles as the port I/O path, see sg_guest_gp),
 * then leave for ring 3 with IOPL 3 (IF 0: the guest polls, it never
 * takes interrupts). */
#include "boot_info.h"

    .section .text.entry, "ax"
    .globl _start
    .code64
_start:
    lea     sg_kstack_top(%rip), %rsp
    call    sg_guest_ring0_setup
    pushq   $(SG_SEL_UDATA | 3)         /* SS */
    lea     sg_ustack_top(%rip), %rax
    pushq   %rax                        /* RSP */
    pushq   $0x3002                     /* RFLAGS: IOPL=3, IF=0 */
    pushq   $(SG_SEL_UCODE | 3)         /* CS */
    lea     sg_guest_user_main(%rip), %rax
    pushq   %rax                        /* RIP */
    iretq

/* #GP: port I/O from ring 3.  We request IOPL 3, so on hardware KVM
 * ring 3 executes in/out itself and never gets here; kvm_pvm ignores IOPL
 * and raises #GP instead.  The handler re-executes the very same
 * instruction in ring 0 with the interrupted registers (so `rep outsb`
 * updates RSI/RCX exactly as it would have) and skips it.  Anything else
 * is a real fault.  Kept to a handful of instructions: on kvm_pvm every
 * ring-0 instruction is emulated.
 * Frame on entry: error code, RIP, CS, RFLAGS, RSP, SS. */
    .globl sg_guest_gp
sg_guest_gp:
    push    %rbx
    mov     16(%rsp), %rbx
    movzwl  (%rbx), %ebx
    cmp     $0x6ef3, %bx        /* rep outsb */
    je      20f
    cmp     $0xef66, %bx        /* out %ax, %dx */
    je      21f
    cmp     $0xed66, %bx        /* in %dx, %ax */
    je      22f
    cmp     $0xee, %bl          /* out %al, %dx */
    je      23f
    cmp     $0xef, %bl          /* out %eax, %dx */
    je      24f
    cmp     $0xec, %bl          /* in %dx, %al */
    je      25f
    cmp     $0xed, %bl          /* in %dx, %eax */
    je      26f
    pop     %rbx
    movl    $(0x100 + 13), %eax
    jmp     sg_guest_isr_common
20: addq    $2, 16(%rsp)
    pop     %rbx
    add     $8, %rsp
    rep outsb
    iretq
21: addq    $2, 16(%rsp)
    pop     %rbx
    add     $8, %rsp
    outw    %ax, %dx
    iretq
22: addq    $2, 16(%rsp)
    pop     %rbx
    add     $8, %rsp
    inw     %dx, %ax
    iretq
23: addq    $1, 16(%rsp)
    pop     %rbx
    add     $8, %rsp
    outb    %al, %dx
    iretq
24: addq    $1, 16(%rsp)
    pop     %rbx
    add     $8, %rsp
    outl    %eax, %dx
    iretq
25: addq    $1, 16(%rsp)
    pop     %rbx
    add     $8, %rsp
    inb     %dx, %al
    iretq
26: addq    $1, 16(%rsp)
    pop     %rbx
    add     $8, %rsp
    inl     %dx, %eax
    iretq

/* 32 exception stubs, 16 bytes apart so the IDT set-up can compute them.
 * A fault is fatal: report 0x100|vector to the VMM's power-off port, which
 * reads the faulting RIP from the frame at RSP. */
    .balign 16
    .globl sg_guest_isr_base
sg_guest_isr_base:
    .set vec, 0
    .rept 32
    .balign 16
    movl    $(0x100 + vec), %eax
    jmp     sg_guest_isr_common
    .set vec, vec + 1
    .endr

/* clang's integrated assembler refuses C's "u" suffix (0x604u): the port as a
 * bare number here, held equal to the header's by the preprocessor. */
#define POWEROFF_PORT_AS 0x604
#if SG_POWEROFF_PORT != POWEROFF_PORT_AS
#error "entry.S: POWEROFF_PORT_AS differs from SG_POWEROFF_PORT"
#endif
sg_guest_isr_common:
    movw    $POWEROFF_PORT_AS, %dx
    outl    %eax, %dx
1:  hlt
    jmp     1b

    .section .bss
    .balign 4096
sg_kstack:
    .skip 16384
    .globl sg_kstack_top
sg_kstack_top:
    .skip 65536
sg_ustack_top:
    .section .note.GNU-stack, "", @progbits
