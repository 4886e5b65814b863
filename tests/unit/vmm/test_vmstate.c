/* vmstate header (checksums, bounds) and the configuration comparison that
 * snapshot-load does before it changes anything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <linux/kvm.h>

#include "devices/serial.h"
#include "vm.h"
#include "vmstate.h"

void sg_vm_set_irq(struct sg_vm *vm, unsigned irq, int level)
{
    (void)vm, (void)irq, (void)level;
}

static struct sg_vm vm;

/* Guest RAM for the kvmclock test: 8 KiB at guest physical 0. */
static uint8_t guest_ram[8192];
void *sg_vm_gpa(struct sg_vm *v, uint64_t gpa, uint64_t len)
{
    (void)v;
    return gpa <= sizeof(guest_ram) && len <= sizeof(guest_ram) - gpa ? guest_ram + gpa : NULL;
}

static int setup(void **state)
{
    (void)state;
    memset(&vm, 0, sizeof(vm));
    vm.ram_size = 256ull << 20;
    vm.ram_low = vm.ram_size;
    vm.nr_vcpus = 1;
    vm.guest_kind = "snapgate-demo";
    pthread_mutex_init(&vm.io_lock, NULL);
    vm.devices[vm.nr_devices++] = sg_serial_create(0x3f8, 4, -1, NULL);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vm.devices[0]->ops->destroy(vm.devices[0]);
    return 0;
}

static void sealed(struct sg_vmstate_header *h, uint8_t *page)
{
    sg_vmstate_header_init(h, &vm);
    h->nr_disks = 1;
    snprintf(h->disks[0].node, sizeof(h->disks[0].node), "disk0");
    snprintf(h->disks[0].snap_id, sizeof(h->disks[0].snap_id), "3");
    h->state_len = 1000;
    sg_vmstate_header_encode(h, page);
}

/* The definition, bit by bit: what the 8-byte steps must equal. */
static uint32_t crc32_bitwise(const uint8_t *p, size_t len)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
    }
    return ~c;
}

static void test_crc32(void **state)
{
    (void)state;
    assert_int_equal(sg_crc32("123456789", 9), 0xcbf43926u);   /* the standard check value */
    assert_int_equal(sg_crc32("", 0), 0);
    /* Every length and alignment around the 8-byte steps, and a long run. */
    static uint8_t buf[70000];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len < 40; len++)
            assert_int_equal(sg_crc32(buf + off, len), crc32_bitwise(buf + off, len));
    assert_int_equal(sg_crc32(buf + 3, sizeof(buf) - 3), crc32_bitwise(buf + 3, sizeof(buf) - 3));
}

static void test_header_round_trip(void **state)
{
    (void)state;
    struct sg_vmstate_header h, back;
    uint8_t page[SG_VMSTATE_HEADER_SIZE];
    sealed(&h, page);
    struct sg_error err = { 0 };
    assert_true(sg_vmstate_header_decode(page, &back, "t", &err));
    assert_int_equal(back.ram_size, vm.ram_size);
    assert_string_equal(back.disks[0].snap_id, "3");
    assert_string_equal(back.devices[0].name, "serial0");
    assert_true(sg_vmstate_config_matches(&back, &vm, "t", &err));

    page[200] ^= 1;    /* any bit flip */
    assert_false(sg_vmstate_header_decode(page, &back, "t", &err));
    assert_string_equal(err.msg, "Snapshot 't': VM state header is corrupt (checksum mismatch)");

    sealed(&h, page);
    memcpy(page, "QFI\xfb", 4);
    sg_error_clear(&err);
    assert_false(sg_vmstate_header_decode(page, &back, "t", &err));
    assert_non_null(strstr(err.msg, "no snapgate VM state"));

    /* a sealed header that points the state blob into the RAM area */
    sg_vmstate_header_init(&h, &vm);
    h.nr_disks = 1;
    h.state_len = SG_VMSTATE_RAM_OFFSET;
    sg_vmstate_header_encode(&h, page);
    sg_error_clear(&err);
    assert_false(sg_vmstate_header_decode(page, &back, "t", &err));
    assert_string_equal(err.msg, "Snapshot 't': VM state header is invalid");
}

static void test_config_mismatch(void **state)
{
    (void)state;
    struct sg_vmstate_header h;
    uint8_t page[SG_VMSTATE_HEADER_SIZE];
    sealed(&h, page);
    struct sg_error err = { 0 };
    vm.ram_size = 128ull << 20;
    assert_false(sg_vmstate_config_matches(&h, &vm, "x", &err));
    assert_string_equal(err.msg, "Snapshot 'x' needs 256 MiB of RAM, this VM has 128 MiB");
    vm.ram_size = 256ull << 20;
    h.nr_devices = 2;
    snprintf(h.devices[1].type, sizeof(h.devices[1].type), "virtio-blk");
    snprintf(h.devices[1].name, sizeof(h.devices[1].name), "virtio-blk0");
    sg_error_clear(&err);
    assert_false(sg_vmstate_config_matches(&h, &vm, "x", &err));
    assert_string_equal(err.msg, "Snapshot 'x' needs device virtio-blk0 (virtio-blk), this VM lacks it");
    h.nr_devices = 1;
    snprintf(h.guest_kind, sizeof(h.guest_kind), "linux");
    sg_error_clear(&err);
    assert_false(sg_vmstate_config_matches(&h, &vm, "x", &err));
    assert_string_equal(err.msg, "Snapshot 'x' holds a 'linux' guest, this VM runs 'snapgate-demo'");
}

/* RAM beyond 3 GiB lives above the PCI hole: the split is part of the
 * configuration, and a header from before the split (ram_low 0: all RAM
 * low) still matches a VM whose RAM is all low. */
static void test_ram_split(void **state)
{
    (void)state;
    struct sg_vmstate_header h, back;
    uint8_t page[SG_VMSTATE_HEADER_SIZE];
    struct sg_error err = { 0 };
    vm.ram_size = 4ull << 30;
    vm.ram_low = 3ull << 30;
    sealed(&h, page);
    assert_true(sg_vmstate_header_decode(page, &back, "t", &err));
    assert_int_equal(back.ram_low, 3ull << 30);
    assert_true(sg_vmstate_config_matches(&back, &vm, "t", &err));
    back.ram_low = 2ull << 30;
    assert_false(sg_vmstate_config_matches(&back, &vm, "t", &err));
    assert_string_equal(err.msg, "Snapshot 't' has 2048 MiB of RAM below 4 GiB, this VM has 3072 MiB");
    vm.ram_size = vm.ram_low = 256ull << 20;
    sealed(&h, page);
    h.ram_low = 0;   /* as written by a version-1 snapgate-vmm */
    sg_vmstate_header_encode(&h, page);
    assert_true(sg_vmstate_header_decode(page, &back, "t", &err));
    assert_true(sg_vmstate_config_matches(&back, &vm, "t", &err));
}

static void test_blob_check(void **state)
{
    (void)state;
    struct sg_error err = { 0 };
    /* an empty blob lacks every record */
    assert_false(sg_vmstate_check(&vm, (const uint8_t *)"", 0, &err));
    assert_string_equal(err.msg, "VM state is truncated or incomplete");
    /* a record whose length runs past the end */
    uint32_t rec[3] = { 64, 0, 1000 };
    sg_error_clear(&err);
    assert_false(sg_vmstate_check(&vm, (const uint8_t *)rec, sizeof(rec), &err));
    /* a device record for a device this VM does not have */
    uint8_t buf[12 + 32];
    uint32_t h2[3] = { 64, 5, 32 };
    memcpy(buf, h2, 12);
    memset(buf + 12, 0, 32);
    sg_error_clear(&err);
    assert_false(sg_vmstate_check(&vm, buf, sizeof(buf), &err));
    assert_string_equal(err.msg, "VM state: device record 5 does not match this VM");
}

/* The saved kvmclock is the guest's own reading: its pvclock record
 * extrapolated with its TSC, as the guest kernel computes it. */
static void test_guest_kvmclock(void **state)
{
    (void)state;
    struct { struct kvm_msrs m; struct kvm_msr_entry e[2]; } msrs;
    memset(&msrs, 0, sizeof(msrs));
    msrs.m.nmsrs = 2;
    msrs.e[0].index = 0x10;                      /* the TSC: not the kvmclock MSR */
    msrs.e[1].index = 0x4b564d01;                /* MSR_KVM_SYSTEM_TIME_NEW */
    msrs.e[1].data = 0x1000;                     /* record at 0x1000, not enabled */
    uint64_t ns = 0;
    assert_false(sg_vmstate_guest_kvmclock(&vm, &msrs.m, 5000, &ns));
    msrs.e[1].data = 0x1001;
    /* version 2, tsc_timestamp 1000, system_time 7e9, mul 2^31 (0.5 ns per
     * cycle before the shift), shift +1: 1 ns per TSC cycle */
    uint32_t version = 2, mul = 1u << 31;
    uint64_t ts = 1000, sys = 7000000000ull;
    int8_t shift = 1;
    memcpy(guest_ram + 0x1000, &version, 4);
    memcpy(guest_ram + 0x1008, &ts, 8);
    memcpy(guest_ram + 0x1010, &sys, 8);
    memcpy(guest_ram + 0x1018, &mul, 4);
    memcpy(guest_ram + 0x101c, &shift, 1);
    assert_true(sg_vmstate_guest_kvmclock(&vm, &msrs.m, 5000, &ns));
    assert_int_equal(ns, 7000004000ull);
    shift = -1;                                  /* 0.25 ns per cycle */
    memcpy(guest_ram + 0x101c, &shift, 1);
    assert_true(sg_vmstate_guest_kvmclock(&vm, &msrs.m, 5000, &ns));
    assert_int_equal(ns, 7000001000ull);
    /* a TSC before the record's timestamp, an update in progress, a record
     * outside RAM: not usable (the caller falls back to KVM_GET_CLOCK) */
    assert_false(sg_vmstate_guest_kvmclock(&vm, &msrs.m, 999, &ns));
    version = 3;
    memcpy(guest_ram + 0x1000, &version, 4);
    assert_false(sg_vmstate_guest_kvmclock(&vm, &msrs.m, 5000, &ns));
    msrs.e[1].data = 0x100001;
    assert_false(sg_vmstate_guest_kvmclock(&vm, &msrs.m, 5000, &ns));
}

/* The pages of the paravirtual records a saved MSR list points at (what a
 * lazy load brings in before the state is applied): enabled ones only, each
 * page once, RAM only; a record that claims more MSRs than it holds is
 * skipped. */
static void test_pv_pages(void **state)
{
    (void)state;
    struct { struct kvm_msrs m; struct kvm_msr_entry e[6]; } l;
    memset(&l, 0, sizeof(l));
    l.m.nmsrs = 6;
    l.e[0] = (struct kvm_msr_entry){ .index = 0x174, .data = 0x10 };        /* not PV */
    l.e[1] = (struct kvm_msr_entry){ .index = 0x12, .data = 0x1001 };       /* pvclock, on */
    l.e[2] = (struct kvm_msr_entry){ .index = 0x4b564d03, .data = 0x1041 }; /* steal: same page */
    l.e[3] = (struct kvm_msr_entry){ .index = 0x4b564d04, .data = 0x1800 }; /* PV EOI: off */
    l.e[4] = (struct kvm_msr_entry){ .index = 0x11, .data = 0x40 };         /* wall clock */
    l.e[5] = (struct kvm_msr_entry){ .index = 0x4b564d02, .data = 0x100001 }; /* not RAM */
    uint8_t blob[12 + sizeof(l)];
    uint32_t h[3] = { 24, 0, sizeof(l) };        /* REC_CPU_MSRS (vmstate.c), vCPU 0 */
    memcpy(blob, h, 12);
    memcpy(blob + 12, &l, sizeof(l));
    uint64_t pages[8];
    assert_int_equal(sg_vmstate_pv_pages(&vm, blob, sizeof(blob), pages, 8), 2);
    assert_int_equal(pages[0], 0x1000);
    assert_int_equal(pages[1], 0);
    assert_int_equal(sg_vmstate_pv_pages(&vm, blob, sizeof(blob), pages, 1), 1);
    assert_int_equal(sg_vmstate_pv_pages(&vm, blob, 20, pages, 8), 0);   /* record cut short */
    l.m.nmsrs = 7;
    memcpy(blob + 12, &l, sizeof(l));
    assert_int_equal(sg_vmstate_pv_pages(&vm, blob, sizeof(blob), pages, 8), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32),
        cmocka_unit_test(test_header_round_trip),
        cmocka_unit_test(test_config_mismatch),
        cmocka_unit_test(test_ram_split),
        cmocka_unit_test(test_blob_check),
        cmocka_unit_test(test_guest_kvmclock),
        cmocka_unit_test(test_pv_pages),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
