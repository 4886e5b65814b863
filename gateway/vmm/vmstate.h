/* vmstate.h: the machine state of a snapshot and its on-disk layout.
 *
 * Layout of the vmstate area (a byte range of the vmstate disk's qcow2
 * vmstate area; this code knows nothing of qcow2):
 *
 *   0          header (4 KiB): magic, version, VM configuration, where the
 *              state blob is, per-disk snapshot IDs/dates, CRC32s
 *   4 KiB      state blob: tagged records (vCPU, in-kernel chips, devices)
 *   1 MiB      guest RAM, byte for byte by RAM index (page and cluster
 *              aligned at a fixed offset, so all-zero pages stay
 *              unallocated and a later version can map it lazily).  RAM
 *              index i is guest physical i below ram_low and 4 GiB +
 *              (i - ram_low) above (guest/boot_info.h), so the PCI hole
 *              takes no room here.
 *   1 MiB + RAM size   end (= the snapshot's vm-state-size)
 */
#ifndef SG_VMSTATE_H
#define SG_VMSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sg_error.h"

struct sg_vm;
struct sg_vmm;

#define SG_VMSTATE_MAGIC "SGVMST01"
#define SG_VMSTATE_VERSION 1
#define SG_VMSTATE_HEADER_SIZE 4096u
#define SG_VMSTATE_STATE_OFFSET 4096u
#define SG_VMSTATE_RAM_OFFSET (1u << 20)
#define SG_VMSTATE_MAX_DEVICES 16
#define SG_VMSTATE_MAX_DISKS 8

struct sg_vmstate_disk {
    char node[64];
    char snap_id[32];       /* ID of this save's snapshot on that disk */
    uint64_t size;          /* virtual disk size */
    uint64_t date_sec;
    uint32_t date_nsec;
    uint32_t is_vmstate;
};

/* Fixed little-endian layout (x86-64 only), CRC32 over the whole 4 KiB with
 * header_crc = 0. */
struct sg_vmstate_header {
    char magic[8];
    uint32_t version;
    uint32_t header_size;
    uint64_t ram_size;
    uint64_t ram_offset;
    uint64_t state_offset;
    uint64_t state_len;
    uint32_t state_crc;
    uint32_t nr_vcpus;
    char guest_kind[32];
    uint64_t vm_clock_ns;
    uint32_t nr_devices;
    uint32_t nr_disks;
    struct { char type[16]; char name[32]; } devices[SG_VMSTATE_MAX_DEVICES];
    struct sg_vmstate_disk disks[SG_VMSTATE_MAX_DISKS];
    uint32_t header_crc;
    /* Added after header_crc so version-1 headers keep their layout; 0 in a
     * header written before guests could exceed 3 GiB (= all RAM low). */
    uint64_t ram_low;
    /* The snapshot tree (zeros in older headers: no parent known): the
     * snapshot on this vmstate disk the VM was last saved as or loaded
     * from when this one was taken, by ID and date (an ID can be reused
     * after a delete, the pair cannot). */
    uint32_t has_parent;
    uint32_t parent_date_nsec;
    uint64_t parent_date_sec;
    char parent_id[32];
};

uint32_t sg_crc32(const void *data, size_t len);

/* Fills the configuration part of *h from the running VM (disks are added
 * by the caller). */
void sg_vmstate_header_init(struct sg_vmstate_header *h, struct sg_vm *vm);
/* Seals: computes header_crc.  `page` receives the 4 KiB on-disk image. */
void sg_vmstate_header_encode(struct sg_vmstate_header *h, uint8_t page[SG_VMSTATE_HEADER_SIZE]);
/* Checks magic, version, CRC and bounds; names what is wrong. */
bool sg_vmstate_header_decode(const uint8_t *page, struct sg_vmstate_header *h, const char *tag,
                              struct sg_error *err);
/* The saved configuration must equal this VM's; names the first difference. */
bool sg_vmstate_config_matches(const struct sg_vmstate_header *h, struct sg_vm *vm,
                               const char *tag, struct sg_error *err);

struct kvm_msrs;
/* kvmclock as the guest reads it at guest TSC `tsc` (its pvclock record,
 * found through the kvmclock MSR in `m`, extrapolated); false when the
 * guest has not enabled kvmclock or the record is unusable. */
bool sg_vmstate_guest_kvmclock(struct sg_vm *vm, const struct kvm_msrs *m, uint64_t tsc, uint64_t *ns);
/* The paravirtual records KVM itself writes into guest RAM, each placed by an
 * MSR: the wall clock (one per VM), and per vCPU the pvclock record, the
 * async page fault area, the steal time record and the PV EOI word. */
struct sg_pv_msr {
    uint32_t index;
    const char *what;
    bool has_enable;       /* bit 0 says enabled; else any nonzero GPA is */
    uint64_t addr_mask, size;
};
extern const struct sg_pv_msr sg_pv_msrs[];
extern const size_t sg_nr_pv_msrs;
/* The record's guest-physical address for the MSR value v; false: not in use. */
bool sg_pv_msr_gpa(const struct sg_pv_msr *pm, uint64_t v, uint64_t *gpa);
/* The guest pages (addresses, each once) of the records the saved MSRs in
 * blob point at, at most max of them: what KVM reads or writes as the state
 * is applied and the vCPUs first run.  Blob need not be checked yet. */
int sg_vmstate_pv_pages(struct sg_vm *vm, const uint8_t *blob, size_t len, uint64_t *pages, int max);

/* vCPU + in-kernel chips + devices, with every vCPU parked.  *blob is
 * malloc'ed. */
bool sg_vmstate_capture(struct sg_vm *vm, uint8_t **blob, size_t *len, struct sg_error *err);
/* Validates every record first (sizes, names), then applies them in the
 * order KVM accepts.  vCPUs must be parked. */
bool sg_vmstate_check(struct sg_vm *vm, const uint8_t *blob, size_t len, struct sg_error *err);
/* With SNAPGATE_VMM_IRQ_TRACE in the environment: the interrupt state
 * (chips, LAPICs, vCPU events, UART) as KVM has it now, on stderr. */
void sg_vmstate_trace(struct sg_vm *vm, const char *when);
bool sg_vmstate_apply(struct sg_vm *vm, const uint8_t *blob, size_t len, struct sg_error *err);

/* -loadvm TAG: restore before the vCPU first runs (snapshot_load.c). */
bool sg_vmm_loadvm_startup(struct sg_vmm *vmm, const char *tag, struct sg_error *err);

#endif
