/* vm.h: one virtual machine — the context every part of snapgate-vmm gets.
 * No global mutable state: main() owns one struct sg_vm. */
#ifndef SG_VM_H
#define SG_VM_H

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "block.h"
#include "devices/device.h"
#include "sg_error.h"

#define SG_VM_MAX_DEVICES 16
#define SG_VM_MAX_DRIVES 8
#define SG_VM_MAX_VCPUS 1

enum sg_run_state {
    SG_RUN_NORMAL,      /* "running" / "paused" / "prelaunch" (see vmm_run.c) */
    SG_RUN_SAVE_VM,     /* "save-vm": paused by a snapshot save */
    SG_RUN_RESTORE_VM,  /* "restore-vm": paused by a snapshot load */
    SG_RUN_SHUTDOWN,    /* "shutdown" */
};

struct sg_drive {
    struct sg_block *bs;
    char node_name[64];     /* disk0, ... */
    char device_name[32];   /* drive0, ... */
    char file[512];
    char format[16];        /* as requested ("" = probe) */
    bool readonly;
    /* Held for every use of bs: virtio-blk (vCPU thread), the monitor and
     * jobs.  A binary semaphore, not a mutex, so that a snapshot job's
     * pause can take it on the main thread and its worker release it once
     * the disks are at the instant: the guest resumes without waiting for
     * that thread to be scheduled (up to 30 ms on a busy host). */
    sem_t lock;
    /* A failed guest request, from virtio-blk to the main loop (which emits
     * BLOCK_IO_ERROR, and stops the VM for werror=enospc): the errno, 0 none. */
    atomic_int io_error;
    atomic_bool io_error_write, io_error_stop;
    int iostatus;           /* main loop: errno of the error that stopped the VM, 0 ok */
};

static inline void sg_drive_lock(struct sg_drive *d)
{
    while (sem_wait(&d->lock) != 0 && errno == EINTR)
        ;
}

static inline void sg_drive_unlock(struct sg_drive *d)
{
    sem_post(&d->lock);
}

struct sg_vm;

struct sg_vcpu {
    struct sg_vm *vm;
    int fd;
    int index;
    struct kvm_run *run;
    size_t run_size;
    pthread_t thread;
    bool thread_started;
};

struct sg_ram_wp;
struct sg_ram_hashes;

/* Where the VM stands in its snapshot tree (snapshot_save.c, snapshot_load.c):
 * the snapshot it was last saved as or loaded from, on the vmstate disk
 * `node`.  `base`: that disk's active vmstate area holds this snapshot's RAM
 * and `hashes` (ram_hash.c) say what it held, so the next save writes only
 * the chunks whose content changed. */
struct sg_snap_pos {
    bool valid;
    bool base;
    char node[64];
    char id[32];
    uint64_t date_sec;
    uint32_t date_nsec;
};

/* What the guest asked of the machine (vm->guest_exit). */
enum { SG_GUEST_EXIT_POWEROFF = 1, SG_GUEST_EXIT_FAULT = 2, SG_GUEST_EXIT_RESET = 3 };

struct sg_vm {
    /* configuration */
    uint64_t ram_size;
    int nr_vcpus;
    char name[128];
    char cmdline[2048];         /* -append */
    char kernel[512];           /* -kernel: "" = the demo guest */
    char initrd[512];
    const char *guest_kind;     /* "snapgate-demo" or "linux" */

    /* KVM */
    int kvm_fd, vm_fd;
    void *ram;              /* all RAM, by RAM index (guest/boot_info.h) */
    uint64_t ram_span;      /* the mapping at ram: ram_size up to a whole GiB, 1 GiB
                             * aligned, so a lazy load's mremap moves whole page-table
                             * pages (ram_lazy.c); past ram_size nothing is ever touched */
    void *ram_aside;        /* NULL or a PROT_NONE reservation as long and aligned: where
                             * the next lazy load moves the old RAM (ram_lazy.c) */
    uint64_t ram_low;       /* RAM at GPA 0; ram_size - ram_low more at 4 GiB */
    uint64_t tsc_khz;
    struct sg_vcpu vcpus[SG_VM_MAX_VCPUS];
    /* Linux guests: the whole machine state before the first instruction
     * (vmstate blob), put back on reset so the LAPIC, IOAPIC, PIC, PIT and
     * MSRs start over as well as the registers. */
    uint8_t *poweron_state;
    size_t poweron_len;
    struct sg_ram_wp *wp;         /* ram_wp.c: a live save's instant, while it is written */
    struct sg_ram_hashes *hashes; /* ram_hash.c: RAM at the incremental base (vm->pos.base) */
    struct sg_snap_pos pos;

    /* devices, in creation order (this order is saved in snapshots) */
    pthread_mutex_t io_lock;
    struct sg_device *devices[SG_VM_MAX_DEVICES];
    int nr_devices;
    struct sg_device *serial;
    struct sg_device *rtc;         /* -kernel boots only */

    struct sg_drive drives[SG_VM_MAX_DRIVES];
    int nr_drives;

    /* serial back end: bytes the guest sends go to serial_out_fd */
    int serial_out_fd;

    /* vCPU control, shared between the main loop and the vCPU thread */
    pthread_mutex_t run_lock;
    pthread_cond_t run_cond;
    bool pause_req;         /* main -> vCPU: stop at the next exit */
    bool vcpu_paused;       /* vCPU -> main: parked, state may be read */
    atomic_bool quit_req;
    enum sg_run_state state;
    /* vCPU -> main loop notifications (guest power-off, fault) */
    int notify_wr, notify_rd;
    atomic_int guest_exit;  /* 0 none or an SG_GUEST_EXIT_* */
    uint32_t guest_exit_code;
};

/* `len` bytes of anonymous memory (MAP_NORESERVE) at a 1 GiB boundary, or NULL. */
void *sg_vm_aligned_space(size_t len, int prot);
/* The length of the mapping at vm->ram (ram_span; ram_size where no span was set). */
static inline uint64_t sg_vm_ram_span(const struct sg_vm *vm)
{
    return vm->ram_span > vm->ram_size ? vm->ram_span : vm->ram_size;
}


/* ---- kvm/vm_kvm.c ----------------------------------------------------- */
bool sg_vm_init(struct sg_vm *vm, struct sg_error *err);
bool sg_vm_set_ram_slots(struct sg_vm *vm, uint32_t flags, struct sg_error *err);
bool sg_vm_load_demo_guest(struct sg_vm *vm, struct sg_error *err);
bool sg_vm_add_device(struct sg_vm *vm, struct sg_device *dev, struct sg_error *err);
void sg_vm_set_irq(struct sg_vm *vm, unsigned irq, int level);
void sg_vm_destroy(struct sg_vm *vm);
/* Host address of guest physical [gpa, gpa+len); NULL unless all of it is
 * RAM on one side of the PCI hole. */
void *sg_vm_gpa(struct sg_vm *vm, uint64_t gpa, uint64_t len);
/* Resets devices, RAM and vCPU to power-on state (vCPU must be paused). */
bool sg_vm_reset(struct sg_vm *vm, struct sg_error *err);

/* ---- kvm/ram_scan.c: never-touched RAM pages (read as zero) -------------- */
struct sg_ram_scan {
    int fd;                 /* /proc/self/pagemap, -1 if unavailable */
    uint64_t *buf;
    size_t page_size;
};
/* false: the kernel cannot tell (every page then counts as touched). */
bool sg_ram_scan_open(struct sg_ram_scan *rs);
bool sg_ram_scan_open_pid(struct sg_ram_scan *rs, int pid);   /* 0: this process */
void sg_ram_scan_close(struct sg_ram_scan *rs);
/* untouched[i] = page i of [addr, addr + npages pages) of guest RAM has
 * never been populated, so it reads as zeros.  On failure all are false. */
bool sg_ram_scan_untouched(struct sg_ram_scan *rs, const void *addr, size_t npages,
                           bool *untouched);

/* ---- kvm/vcpu.c ------------------------------------------------------- */
bool sg_vcpu_init(struct sg_vm *vm, struct sg_vcpu *vcpu, int index, struct sg_error *err);
bool sg_vcpu_set_boot_state(struct sg_vm *vm, struct sg_vcpu *vcpu, struct sg_error *err);
/* A flat 4 GiB segment (64-bit code when `code`, else 32-bit data), as both
 * the demo guest and a Linux kernel are entered with. */
struct kvm_segment;
void sg_vcpu_flat_segment(struct kvm_segment *s, uint16_t sel, uint8_t type, bool code);
bool sg_vm_start_vcpus(struct sg_vm *vm, struct sg_error *err);
/* Parks every vCPU outside KVM_RUN (blocks until they are parked). */
void sg_vm_pause(struct sg_vm *vm);
void sg_vm_resume(struct sg_vm *vm);
void sg_vm_stop_vcpus(struct sg_vm *vm);
/* vCPU thread (a device's port write, an exit): hands SG_GUEST_EXIT_* to
 * the main loop and parks the vCPU at its next exit. */
void sg_vm_guest_exit(struct sg_vm *vm, int kind, uint32_t code);

#endif
