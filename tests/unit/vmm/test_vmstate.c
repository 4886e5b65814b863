/* vmstate header (checksums, bounds) and the configuration comparison that
 * snapshot-load does before it changes anything. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "devices/serial.h"
#include "vm.h"
#include "vmstate.h"

void sg_vm_set_irq(struct sg_vm *vm, unsigned irq, int level)
{
    (void)vm, (void)irq, (void)level;
}

static struct sg_vm vm;

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

static void test_crc32(void **state)
{
    (void)state;
    assert_int_equal(sg_crc32("123456789", 9), 0xcbf43926u);   /* the standard check value */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32),
        cmocka_unit_test(test_header_round_trip),
        cmocka_unit_test(test_config_mismatch),
        cmocka_unit_test(test_ram_split),
        cmocka_unit_test(test_blob_check),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
