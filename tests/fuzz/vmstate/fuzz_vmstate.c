/* fuzz_vmstate: libFuzzer target for what a snapshot load reads from an
 * image before it trusts it (gateway/vmm/vmstate.c): the 4 KiB header
 * (sg_vmstate_header_decode), the configuration check against this VM
 * (sg_vmstate_config_matches) and the state blob: record walk, size and
 * index checks (sg_vmstate_check), the restore (sg_vmstate_apply), which
 * hands each device record to that device's load function, and the walk of
 * the saved MSRs a lazy load does before the check (sg_vmstate_pv_pages).
 *
 * Input: byte 0 = flags, then the header page (zero-padded to 4 KiB), then
 * the state blob.  Flag bit 0 re-seals the header CRC after the mutation, so
 * the fuzzer gets past the checksum into the field checks; bit 1 runs the
 * blob even when the header was refused, as a corrupt header is no guard for
 * the blob code.
 *
 * No KVM: vmstate.c is compiled with ioctl renamed to sg_fuzz_ioctl (see
 * CMakeLists.txt), which accepts every request, so apply runs its whole
 * path on a fake VM with the real serial, PCI host and virtio-blk devices. */
#include <linux/kvm.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "devices/pci.h"
#include "devices/serial.h"
#include "devices/virtio_blk.h"
#include "vm.h"
#include "vm_io.h"
#include "vmstate.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int sg_fuzz_ioctl(int fd, unsigned long req, ...);

/* KVM as the restore sees it: every SET succeeds; SET_MSRS reports all
 * MSRs written, as KVM does when it accepts them. */
int sg_fuzz_ioctl(int fd, unsigned long req, ...)
{
    (void)fd;
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    if (req == KVM_SET_MSRS) {
        struct kvm_msrs m;
        memcpy(&m, arg, sizeof m);
        return (int)m.nmsrs;
    }
    return 0;
}

/* The devices drive their IRQ line and map guest memory through the VM;
 * the fake VM has neither. */
void sg_vm_set_irq(struct sg_vm *vm, unsigned irq, int level)
{
    (void)vm;
    (void)irq;
    (void)level;
}

void *sg_vm_gpa(struct sg_vm *vm, uint64_t gpa, uint64_t len)
{
    (void)vm;
    (void)gpa;
    (void)len;
    return NULL;
}

/* PCI config cycles are not part of a restore. */
struct sg_device *sg_vm_pci_device(struct sg_vm *vm, unsigned slot)
{
    (void)vm;
    (void)slot;
    return NULL;
}

bool sg_fuzz_fake_vm(struct sg_vm *vm);

bool sg_fuzz_fake_vm(struct sg_vm *vm)
{
    struct sg_error err = {0};
    memset(vm, 0, sizeof *vm);
    vm->ram_size = 64u << 20;
    vm->ram_low = vm->ram_size;
    vm->nr_vcpus = 1;
    vm->guest_kind = "snapgate-demo";
    vm->kvm_fd = vm->vm_fd = vm->vcpus[0].fd = -1;
    pthread_mutex_init(&vm->io_lock, NULL);
    struct sg_device *d[3] = {
        sg_serial_create(0x3f8, 4, -1, &err),
        sg_pci_host_create(&err),
        sg_virtio_blk_create(NULL, 1, 0, 10, &err),
    };
    for (int i = 0; i < 3; i++) {
        if (!d[i])
            continue;
        d[i]->vm = vm;
        vm->devices[vm->nr_devices++] = d[i];
    }
    return vm->nr_devices == 3;
}

/* make_seeds.c builds this file with SG_FUZZ_NO_ENTRY to reuse the fake VM. */
#ifndef SG_FUZZ_NO_ENTRY
static void free_vm(struct sg_vm *vm)
{
    for (int i = 0; i < vm->nr_devices; i++)
        vm->devices[i]->ops->destroy(vm->devices[i]);
    pthread_mutex_destroy(&vm->io_lock);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    data++;
    size--;
    uint8_t *page = calloc(1, SG_VMSTATE_HEADER_SIZE);
    if (!page)
        return 0;
    size_t hl = size < SG_VMSTATE_HEADER_SIZE ? size : SG_VMSTATE_HEADER_SIZE;
    memcpy(page, data, hl);
    if (flags & 1) {
        struct sg_vmstate_header h;
        memcpy(&h, page, sizeof h);
        /* encode() also zero-fills the page past the struct, as a save does. */
        sg_vmstate_header_encode(&h, page);
    }
    /* The blob gets its own exact-size allocation so ASan sees any read
     * past its end. */
    size_t bl = size - hl;
    uint8_t *blob = malloc(bl ? bl : 1);
    if (!blob) {
        free(page);
        return 0;
    }
    if (bl)
        memcpy(blob, data + hl, bl);

    struct sg_vm vm;
    if (sg_fuzz_fake_vm(&vm)) {
        struct sg_error err = {0};
        struct sg_vmstate_header h;
        bool ok = sg_vmstate_header_decode(page, &h, "fuzz", &err);
        sg_error_clear(&err);
        if (ok) {
            ok = sg_vmstate_config_matches(&h, &vm, "fuzz", &err);
            sg_error_clear(&err);
            /* The load reads state_len bytes of blob; the input may be shorter. */
            if (h.state_len < bl)
                bl = (size_t)h.state_len;
        }
        if (ok || (flags & 2)) {
            /* A lazy load reads the PV pages before the blob is checked. */
            uint64_t pages[8];
            (void)sg_vmstate_pv_pages(&vm, blob, bl, pages, 8);
            (void)sg_vmstate_apply(&vm, blob, bl, &err);
            sg_error_clear(&err);
        }
    }
    free_vm(&vm);
    free(blob);
    free(page);
    return 0;
}
#endif
