/* guest.c: snapgate's demo guest.  Freestanding; linked at 1 MiB.
 *
 * Only sg_guest_ring0_setup runs in ring 0 (on kvm_pvm ring 0 is emulated,
 * ~1800x slower).  Everything else runs in ring 3 with IOPL 3: port I/O for
 * the UART, PCI config space and a legacy virtio-blk device, rdtsc for time.
 * Nothing needs interrupts, so the hot path never enters ring 0. */
#include <stddef.h>
#include <stdint.h>

#include "boot_info.h"

#define COM1 0x3f8
#define TICK_MS 100
#define DIRTY_BASE (32ull << 20)
#define WINDOW (1ull << 20)
#define MAX_WINDOWS 16384   /* 16 GiB: all of the largest RAM */

extern char sg_guest_isr_base[];
extern char sg_guest_gp[];
void sg_guest_ring0_setup(void);
void sg_guest_user_main(void);

/* ---- ring 0 ------------------------------------------------------------ */

extern char sg_kstack_top[];

void sg_guest_ring0_setup(void)
{
    volatile uint64_t *idt = (volatile uint64_t *)(uintptr_t)SG_IDT_ADDR;
    for (int i = 0; i < 32; i++) {
        uint64_t h = (uint64_t)(uintptr_t)(i == 13 ? sg_guest_gp : sg_guest_isr_base + 16 * i);
        idt[2 * i] = (h & 0xffff) | ((uint64_t)SG_SEL_KCODE << 16) |
                     (0x8eull << 40) | ((h >> 16 & 0xffff) << 48);
        idt[2 * i + 1] = h >> 32;
    }
    /* TSS.rsp0: the stack a ring-3 fault switches to. */
    *(volatile uint64_t *)(uintptr_t)(SG_TSS_ADDR + 4) = (uint64_t)(uintptr_t)sg_kstack_top;
    struct __attribute__((packed)) { uint16_t limit; uint64_t base; } d = {
        32 * 16 - 1, SG_IDT_ADDR };
    __asm__ volatile("lidt %0" : : "m"(d));
}

/* ---- ring 3 helpers ---------------------------------------------------- */

void *memset(void *s, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);

void *memset(void *s, int c, size_t n)
{
    unsigned char *p = s;
    while (n--)
        *p++ = (unsigned char)c;
    return s;
}

void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *a = d;
    const unsigned char *b = s;
    while (n--)
        *a++ = *b++;
    return d;
}

/* Plain port I/O: native with IOPL 3, or through the #GP handler on
 * kvm_pvm (entry.S), which re-executes exactly these encodings. */
static inline void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "d"(port)); }
static inline void outw(uint16_t port, uint16_t v) { __asm__ volatile("outw %0, %1" : : "a"(v), "d"(port)); }
static inline void outl(uint16_t port, uint32_t v) { __asm__ volatile("outl %0, %1" : : "a"(v), "d"(port)); }
static inline uint8_t inb(uint16_t port) { uint8_t v; __asm__ volatile("inb %1, %0" : "=a"(v) : "d"(port)); return v; }
static inline uint16_t inw(uint16_t port) { uint16_t v; __asm__ volatile("inw %1, %0" : "=a"(v) : "d"(port)); return v; }
static inline uint32_t inl(uint16_t port) { uint32_t v; __asm__ volatile("inl %1, %0" : "=a"(v) : "d"(port)); return v; }
static inline void outsb(uint16_t port, const void *buf, uint64_t n)
{
    __asm__ volatile("cld; rep outsb" : "+S"(buf), "+c"(n) : "d"(port) : "memory");
}
static inline uint64_t rdtsc(void)
{
    uint32_t lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return (uint64_t)hi << 32 | lo;
}
#define barrier() __asm__ volatile("" ::: "memory")

/* One LSR check per 16-byte FIFO load, then one string OUT: every port
 * access costs a trip through the emulated ring 0 on kvm_pvm. */
static void write_raw(const char *s, size_t n)
{
    while (n) {
        size_t chunk = n < 16 ? n : 16;
        /* Bounded wait for an empty THR: a wedged UART must not hang us. */
        for (int i = 0; i < 100000 && !(inb(COM1 + 5) & 0x20); i++)
            ;
        outsb(COM1, s, chunk);
        s += chunk;
        n -= chunk;
    }
}

static void puts_(const char *s)
{
    char buf[128];
    size_t n = 0;
    for (; *s; s++) {
        if (n + 2 > sizeof(buf)) {
            write_raw(buf, n);
            n = 0;
        }
        if (*s == '\n')
            buf[n++] = '\r';
        buf[n++] = *s;
    }
    write_raw(buf, n);
}

static char *fmt_u64(char *p, uint64_t v, unsigned base)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    *p = 0;
    return p;
}

static void put_u64(uint64_t v, unsigned base)
{
    char b[24];
    fmt_u64(b, v, base);
    puts_(b);
}

/* Console input, polled once a tick: a line typed on COM1 (ended by Enter)
 * is answered with "serial input: LINE", control keys shown as ^X. */
static char in_line[80];
static size_t in_len;

static void serial_poll(void)
{
    for (int i = 0; i < 64 && (inb(COM1 + 5) & 1); i++) {
        uint8_t c = inb(COM1);
        if (c == '\r' || c == '\n') {
            if (!in_len)
                continue;
            in_line[in_len] = 0;
            puts_("serial input: ");
            puts_(in_line);
            puts_("\n");
            in_len = 0;
        } else if (in_len + 3 < sizeof(in_line)) {
            if (c < 0x20 || c == 0x7f) {
                in_line[in_len++] = '^';
                c = c == 0x7f ? '?' : (uint8_t)(c + '@');
            }
            in_line[in_len++] = (char)c;
        }
    }
}

static void poweroff(uint32_t code)
{
    outl(SG_POWEROFF_PORT, code);
}

/* ---- PCI + legacy virtio-blk ------------------------------------------- */

static uint32_t pci_read(unsigned dev, unsigned reg)
{
    outl(0xcf8, 0x80000000u | dev << 11 | (reg & 0xfc));
    return inl(0xcfc);
}

static void pci_write(unsigned dev, unsigned reg, uint32_t v)
{
    outl(0xcf8, 0x80000000u | dev << 11 | (reg & 0xfc));
    outl(0xcfc, v);
}

struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };
struct blk_req_hdr { uint32_t type; uint32_t reserved; uint64_t sector; };

#define VQ_MAX 256
#define VIRTIO_PCI_HOST_FEATURES 0
#define VIRTIO_PCI_GUEST_FEATURES 4
#define VIRTIO_PCI_QUEUE_PFN 8
#define VIRTIO_PCI_QUEUE_NUM 12
#define VIRTIO_PCI_QUEUE_SEL 14
#define VIRTIO_PCI_QUEUE_NOTIFY 16
#define VIRTIO_PCI_STATUS 18
#define VIRTIO_PCI_ISR 19

static struct disk {
    uint16_t io;
    uint16_t qsize;
    uint16_t last_used;
    uint16_t avail_idx;
    volatile struct vring_desc *desc;
    volatile uint16_t *avail;   /* flags, idx, ring[] */
    volatile uint16_t *used;    /* flags, idx, then {u32 id, u32 len}[] */
} disk;

static uint8_t vq_mem[3 * 4096 + 4096 * 3] __attribute__((aligned(4096)));
static struct blk_req_hdr req_hdr;
static uint8_t req_data[512] __attribute__((aligned(512)));
static volatile uint8_t req_status;
static uint64_t tsc_khz;

static int disk_init(void)
{
    for (unsigned dev = 0; dev < 32; dev++) {
        uint32_t id = pci_read(dev, 0);
        if (id != (0x1001u << 16 | 0x1af4u))
            continue;
        uint32_t bar = pci_read(dev, 0x10);
        if (!(bar & 1))
            continue;
        pci_write(dev, 0x04, pci_read(dev, 0x04) | 0x5); /* I/O + bus master */
        uint16_t io = (uint16_t)(bar & ~3u);
        outb(io + VIRTIO_PCI_STATUS, 0);
        outb(io + VIRTIO_PCI_STATUS, 1 | 2);              /* ACK | DRIVER */
        (void)inl(io + VIRTIO_PCI_HOST_FEATURES);
        outl(io + VIRTIO_PCI_GUEST_FEATURES, 0);
        outw(io + VIRTIO_PCI_QUEUE_SEL, 0);
        uint16_t qs = inw(io + VIRTIO_PCI_QUEUE_NUM);
        if (qs == 0 || qs > VQ_MAX)
            return -1;
        uintptr_t base = (uintptr_t)vq_mem;
        disk.io = io;
        disk.qsize = qs;
        disk.desc = (volatile struct vring_desc *)base;
        disk.avail = (volatile uint16_t *)(base + 16u * qs);
        uintptr_t used = (base + 16u * qs + 6u + 2u * qs + 4095) & ~(uintptr_t)4095;
        disk.used = (volatile uint16_t *)used;
        disk.last_used = disk.used[1];
        disk.avail_idx = disk.avail[1];
        outl(io + VIRTIO_PCI_QUEUE_PFN, (uint32_t)(base >> 12));
        outb(io + VIRTIO_PCI_STATUS, 1 | 2 | 4);          /* DRIVER_OK */
        return 0;
    }
    return -1;
}

/* Writes one sector and polls the used ring (the VMM completes requests
 * synchronously, but a real device may not, so the wait is bounded). */
static int disk_write_sector0(const char *text)
{
    memset(req_data, 0, sizeof(req_data));
    for (size_t i = 0; text[i] && i < sizeof(req_data); i++)
        req_data[i] = (uint8_t)text[i];
    req_hdr.type = 1;   /* VIRTIO_BLK_T_OUT */
    req_hdr.reserved = 0;
    req_hdr.sector = 0;
    req_status = 0xff;
    disk.desc[0] = (struct vring_desc){ (uintptr_t)&req_hdr, sizeof(req_hdr), 1, 1 };
    disk.desc[1] = (struct vring_desc){ (uintptr_t)req_data, 512, 1, 2 };
    disk.desc[2] = (struct vring_desc){ (uintptr_t)&req_status, 1, 2, 0 };
    disk.avail[2 + disk.avail_idx % disk.qsize] = 0;
    barrier();
    disk.avail[1] = ++disk.avail_idx;
    barrier();
    outw(disk.io + VIRTIO_PCI_QUEUE_NOTIFY, 0);
    uint64_t end = rdtsc() + tsc_khz * 5000;
    while (disk.used[1] == disk.last_used) {
        if (rdtsc() > end)
            return -2;
    }
    disk.last_used = disk.used[1];
    (void)inb(disk.io + VIRTIO_PCI_ISR);   /* acknowledges the interrupt line */
    barrier();
    return req_status == 0 ? 0 : -1;
}

/* ---- RAM pattern ------------------------------------------------------- */

static uint32_t gens[MAX_WINDOWS];
static uint64_t ram_low;   /* RAM below the PCI hole (boot_info.h) */

/* RAM index -> guest physical address.  Windows are 1 MiB aligned and the
 * split is too, so a window never straddles the hole. */
static inline uint64_t ram_gpa(uint64_t index)
{
    return index < ram_low ? index : SG_RAM_HIGH_BASE + (index - ram_low);
}

static inline uint64_t pattern(uint64_t addr, uint32_t gen)
{
    uint64_t x = addr ^ ((uint64_t)gen * 0x9e3779b97f4a7c15ull);
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 29;
    return x;
}

static void fill(uint64_t base, uint64_t len, uint32_t gen)
{
    volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)base;
    for (uint64_t i = 0; i < len / 8; i++)
        p[i] = pattern(base + i * 8, gen);
}

static int verify(uint64_t base, uint64_t len, uint32_t gen, uint64_t *bad)
{
    volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)base;
    for (uint64_t i = 0; i < len / 8; i++) {
        if (p[i] != pattern(base + i * 8, gen)) {
            *bad = base + i * 8;
            return -1;
        }
    }
    return 0;
}

/* Checks window w of the dirty area against its generation, then fills it
 * with the next: the generations live in guest RAM too, so a snapshot that
 * is one instant of RAM always passes the check after a load, and one
 * that mixed two instants fails it. */
static void churn_window(uint64_t dbase, uint64_t w)
{
    uint64_t base = ram_gpa(dbase + w * WINDOW), bad = 0;
    if (verify(base, WINDOW, gens[w], &bad) != 0) {
        puts_("RAM CHECK FAILED at 0x");
        put_u64(bad, 16);
        puts_("\n");
    }
    gens[w]++;
    fill(base, WINDOW, gens[w]);
}

static uint64_t parse_size(const char *s)
{
    uint64_t v = 0;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (uint64_t)(*s++ - '0');
    switch (*s) {
    case 'k': case 'K': v <<= 10; break;
    case 'm': case 'M': v <<= 20; break;
    case 'g': case 'G': v <<= 30; break;
    default: break;
    }
    return v;
}

static const char *find_arg(const char *cmdline, const char *key)
{
    size_t kl = 0;
    while (key[kl])
        kl++;
    for (const char *p = cmdline; *p; p++) {
        if (p != cmdline && p[-1] != ' ' && p[-1] != ',')
            continue;
        size_t i = 0;
        while (i < kl && p[i] == key[i])
            i++;
        if (i == kl)
            return p + kl;
    }
    return NULL;
}

void sg_guest_user_main(void)
{
    const volatile struct sg_boot_info *bi = (const volatile struct sg_boot_info *)(uintptr_t)SG_BOOT_INFO_ADDR;
    char cmdline[sizeof(bi->cmdline)];
    for (size_t i = 0; i < sizeof(cmdline); i++)
        cmdline[i] = bi->cmdline[i];
    cmdline[sizeof(cmdline) - 1] = 0;
    tsc_khz = bi->tsc_khz ? bi->tsc_khz : 1000000;

    outb(COM1 + 1, 0x00);  /* no UART interrupts: we poll */
    outb(COM1 + 3, 0x80);  /* DLAB */
    outb(COM1 + 0, 0x01);  /* 115200 */
    outb(COM1 + 1, 0x00);
    outb(COM1 + 3, 0x03);  /* 8N1 */
    outb(COM1 + 2, 0x07);  /* FIFO on, cleared */
    outb(COM1 + 4, 0x03);  /* DTR | RTS */

    ram_low = bi->version >= 2 ? bi->ram_low : bi->ram_size;
    /* dirty=SIZE fills SIZE of RAM from RAM index dirty-base= (default
     * 32 MiB) on, crossing the PCI hole when RAM does. */
    uint64_t dirty = 0, nwin = 0, dbase = DIRTY_BASE;
    const char *db = find_arg(cmdline, "dirty-base=");
    if (db) {
        dbase = parse_size(db) & ~(WINDOW - 1);
        if (dbase < DIRTY_BASE)
            dbase = DIRTY_BASE;
    }
    const char *d = find_arg(cmdline, "dirty=");
    if (d) {
        dirty = parse_size(d) & ~(WINDOW - 1);
        uint64_t room = bi->ram_size > dbase ? (bi->ram_size - dbase) & ~(WINDOW - 1) : 0;
        if (dirty > room) {
            puts_("dirty: clamped to RAM size\n");
            dirty = room;
        }
        if (dirty / WINDOW > MAX_WINDOWS)
            dirty = MAX_WINDOWS * WINDOW;
        nwin = dirty / WINDOW;
        for (uint64_t w = 0; w < nwin; w++)
            fill(ram_gpa(dbase + w * WINDOW), WINDOW, 0);
        puts_("dirty: ");
        put_u64(dirty >> 20, 10);
        puts_(" MiB filled\n");
    }

    int have_disk = disk_init() == 0;
    if (!have_disk)
        puts_("no virtio-blk disk found\n");
    puts_("snapgate demo guest ready\n");

    /* churn=SIZE: rewrite SIZE of the dirty area per second (at least the
     * one window per tick it always does), in the time between ticks, each
     * window checked before it is refilled; "churn: N MiB/s" every second
     * says what was achieved (flat out when SIZE is more than the guest
     * can do: its speed). */
    uint64_t churn = 0;
    const char *c = find_arg(cmdline, "churn=");
    if (c && nwin)
        churn = parse_size(c);
    uint64_t per_tick = churn / (1000 / TICK_MS);
    uint64_t budget = 0, next_win = 0, done_bytes = 0, busy_tsc = 0;

    uint64_t period = tsc_khz * TICK_MS;
    uint64_t next = rdtsc() + period, rate_start = rdtsc();
    int disk_errors = 0;
    for (uint64_t tick = 1;; tick++) {
        uint64_t now;
        while ((now = rdtsc()) < next) {
            if (budget >= WINDOW) {
                uint64_t t0 = rdtsc();
                churn_window(dbase, next_win);
                busy_tsc += rdtsc() - t0;
                next_win = (next_win + 1) % nwin;
                budget -= WINDOW;
                done_bytes += WINDOW;
                continue;
            }
            uint64_t left_us = (next - now) * 1000 / tsc_khz;
            if (left_us > 2000)
                outl(SG_IDLE_PORT, (uint32_t)(left_us - 1000));
            else
                __asm__ volatile("pause");
        }
        /* After a pause (stop/cont, snapshot) the TSC jumped: resync
         * instead of firing a burst of catch-up ticks. */
        next = now > next + period ? now + period : next + period;

        char line[40] = "tick ";
        char *e = fmt_u64(line + 5, tick, 10);
        *e++ = '\n';
        *e = 0;
        puts_(line);
        serial_poll();
        if (have_disk) {
            int r = disk_write_sector0(line);
            if (r != 0 && disk_errors++ < 3)
                puts_(r == -2 ? "disk write timed out\n" : "disk write failed\n");
        }
        if (nwin) {
            uint64_t t0 = rdtsc();
            churn_window(dbase, next_win);
            busy_tsc += rdtsc() - t0;
            next_win = (next_win + 1) % nwin;
            done_bytes += WINDOW;
            /* No backlog: a guest that cannot keep up runs flat out. */
            budget = per_tick > WINDOW ? per_tick - WINDOW : 0;
        }
        if (churn && tick % (1000 / TICK_MS) == 0) {
            uint64_t us = (rdtsc() - rate_start) * 1000 / tsc_khz;
            puts_("churn: ");
            put_u64(us ? done_bytes * 1000000 / us >> 20 : 0, 10);
            /* The rate while it was writing: its speed, also when churn=
             * leaves it idle most of the time. */
            uint64_t bus = busy_tsc * 1000 / tsc_khz;
            puts_(" MiB/s, ");
            put_u64(bus ? done_bytes * 1000000 / bus >> 20 : 0, 10);
            puts_(" MiB/s writing\n");
            done_bytes = 0;
            busy_tsc = 0;
            rate_start = rdtsc();
        }
    }
    poweroff(0);
}
