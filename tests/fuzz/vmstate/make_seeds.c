/* make_seeds: writes the seed corpus of fuzz_vmstate (a whole header + state
 * blob for the harness's fake VM, and variations).  Rebuild the seeds after
 * a layout change of gateway/vmm/vmstate.h or of a device's state:
 *   cc -I gateway/vmm -I gateway/util -I gateway/vmm/block \
 *      tests/fuzz/vmstate/make_seeds.c gateway/vmm/vmstate.c \
 *      gateway/vmm/devices/{serial,pci,virtio_blk}.c -Dioctl=sg_fuzz_ioctl \
 *      build/gateway/vmm/block/libsgblock.a \
 *      tests/fuzz/vmstate/fuzz_vmstate.c -DSG_FUZZ_NO_ENTRY \
 *      build/gateway/util/libsgutil.a -lpthread -o /tmp/make_seeds
 *   /tmp/make_seeds tests/fuzz/vmstate/corpus
 * The record tags mirror vmstate.c's private enum. */
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vm.h"
#include "vmstate.h"

bool sg_fuzz_fake_vm(struct sg_vm *vm);

static uint8_t blob[1 << 16];
static size_t blen;

static void rec(uint32_t tag, uint32_t index, const void *data, uint32_t len)
{
    uint32_t h[3] = {tag, index, len};
    memcpy(blob + blen, h, 12);
    memcpy(blob + blen + 12, data, len);
    blen += 12 + len;
}

static void put(const char *dir, const char *name, uint8_t flags, const uint8_t *page,
                size_t plen, const uint8_t *b, size_t bl)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite(&flags, 1, 1, f);
    fwrite(page, 1, plen, f);
    fwrite(b, 1, bl, f);
    fclose(f);
}

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    struct sg_vm vm;
    if (!sg_fuzz_fake_vm(&vm))
        return 1;
    static uint8_t zero[8192];
    rec(1, 0, zero, sizeof(struct kvm_clock_data));
    rec(2, 0, zero, sizeof(struct kvm_pit_state2));
    for (uint32_t c = 0; c < 3; c++)
        rec(3, c, zero, sizeof(struct kvm_irqchip));
    rec(16, 0, zero, sizeof(struct kvm_mp_state));
    rec(17, 0, zero, sizeof(struct kvm_regs));
    rec(18, 0, zero, sizeof(struct kvm_sregs));
    rec(19, 0, zero, sizeof(struct kvm_fpu));
    rec(20, 0, zero, sizeof(struct kvm_xsave));
    rec(21, 0, zero, sizeof(struct kvm_xcrs));
    rec(22, 0, zero, sizeof(struct kvm_debugregs));
    rec(23, 0, zero, sizeof(struct kvm_lapic_state));
    struct { struct kvm_msrs m; struct kvm_msr_entry e[2]; } msrs;
    memset(&msrs, 0, sizeof msrs);
    msrs.m.nmsrs = 2;
    msrs.e[0].index = 0x10;
    msrs.e[1].index = 0xc0000080;
    rec(24, 0, &msrs, sizeof msrs);
    rec(25, 0, zero, sizeof(struct kvm_vcpu_events));
    for (int i = 0; i < vm.nr_devices; i++) {
        uint8_t buf[32 + SG_DEVICE_STATE_MAX];
        memset(buf, 0, 32);
        snprintf((char *)buf, 32, "%s", vm.devices[i]->name);
        size_t n = vm.devices[i]->ops->save(vm.devices[i], buf + 32, SG_DEVICE_STATE_MAX);
        rec(64, (uint32_t)i, buf, (uint32_t)(32 + n));
    }

    struct sg_vmstate_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, SG_VMSTATE_MAGIC, 8);
    h.version = SG_VMSTATE_VERSION;
    h.header_size = SG_VMSTATE_HEADER_SIZE;
    h.ram_size = vm.ram_size;
    h.ram_low = vm.ram_low;
    h.ram_offset = SG_VMSTATE_RAM_OFFSET;
    h.state_offset = SG_VMSTATE_STATE_OFFSET;
    h.state_len = blen;
    h.nr_vcpus = 1;
    snprintf(h.guest_kind, sizeof h.guest_kind, "%s", vm.guest_kind);
    h.nr_devices = (uint32_t)vm.nr_devices;
    for (int i = 0; i < vm.nr_devices; i++) {
        snprintf(h.devices[i].type, sizeof h.devices[i].type, "%s", vm.devices[i]->ops->type);
        snprintf(h.devices[i].name, sizeof h.devices[i].name, "%s", vm.devices[i]->name);
    }
    h.nr_disks = 1;
    snprintf(h.disks[0].node, sizeof h.disks[0].node, "disk0");
    snprintf(h.disks[0].snap_id, sizeof h.disks[0].snap_id, "1");
    h.disks[0].size = 64u << 20;
    h.disks[0].is_vmstate = 1;
    uint8_t page[SG_VMSTATE_HEADER_SIZE];
    sg_vmstate_header_encode(&h, page);

    put(argv[1], "full", 0, page, sizeof page, blob, blen);
    put(argv[1], "full-reseal", 1, page, sizeof page, blob, blen);
    put(argv[1], "header-only", 0, page, sizeof page, NULL, 0);
    put(argv[1], "truncated-blob", 1, page, sizeof page, blob, blen / 2);
    put(argv[1], "short-header", 1, page, 200, NULL, 0);
    uint8_t bad[SG_VMSTATE_HEADER_SIZE];
    memcpy(bad, page, sizeof bad);
    bad[100] ^= 1;   /* CRC no longer matches */
    put(argv[1], "bad-crc-blob-anyway", 2, bad, sizeof bad, blob, blen);
    h.nr_vcpus = 2;
    h.ram_size = 128u << 20;
    sg_vmstate_header_encode(&h, page);
    put(argv[1], "config-mismatch", 0, page, sizeof page, blob, blen);
    return 0;
}
