/* guest_blob.c: the demo guest's flat image, embedded at build time.
 * SG_GUEST_BIN is the path of guest.bin (set by gateway/vmm/CMakeLists.txt). */
#include <stddef.h>

/* GNU C predefines `linux` and `unix` as 1: a build tree under a directory
 * of that name would otherwise turn into ".../1/..." when stringified. */
#undef linux
#undef unix

#define SG_STR2(x) #x
#define SG_STR(x) SG_STR2(x)

__asm__(".pushsection .rodata\n"
        ".balign 4096\n"
        ".globl sg_demo_guest_start\n"
        "sg_demo_guest_start:\n"
        ".incbin \"" SG_STR(SG_GUEST_BIN) "\"\n"
        ".globl sg_demo_guest_end\n"
        "sg_demo_guest_end:\n"
        ".popsection\n");
