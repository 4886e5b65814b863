/* virtio_blk.c: legacy virtio-blk over PCI I/O ports, one queue.
 *
 * Requests are served synchronously on the notify write (vCPU thread, under
 * the drive's lock; not io_lock, see vm_io.c): the guest sees the used ring updated
 * when its OUT instruction returns.  The register state lives in one struct
 * with the queue position, so save/load is a copy and the ring itself is
 * in guest RAM (saved with it). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/pci.h"
#include "devices/virtio_blk.h"
#include "vm.h"

#define VBLK_STATE_VERSION 1
#define VBLK_QUEUE_SIZE 128
#define VBLK_BAR_SIZE 0x40
#define VBLK_IO_BASE 0xc000

enum {
    VIRTIO_BLK_F_RO = 1u << 5,
    VIRTIO_BLK_F_BLK_SIZE = 1u << 6,
    VIRTIO_BLK_F_FLUSH = 1u << 9,
};
enum { VIRTIO_BLK_T_IN = 0, VIRTIO_BLK_T_OUT = 1, VIRTIO_BLK_T_FLUSH = 4, VIRTIO_BLK_T_GET_ID = 8 };
enum { VIRTIO_BLK_S_OK = 0, VIRTIO_BLK_S_IOERR = 1, VIRTIO_BLK_S_UNSUPP = 2 };
/* Not a virtio status: the request stays in the ring (werror=enospc). */
enum { VBLK_HOLD = 0xfe };
enum { VRING_DESC_F_NEXT = 1, VRING_DESC_F_WRITE = 2 };
enum { STATUS_DRIVER_OK = 4, STATUS_FAILED = 0x80 };

struct vring_desc { uint64_t addr; uint32_t len; uint16_t flags; uint16_t next; };

struct vblk_regs {          /* saved verbatim */
    uint32_t version;
    uint32_t guest_features;
    uint32_t queue_pfn;
    uint16_t queue_sel;
    uint16_t last_avail;
    uint8_t status;
    uint8_t isr;
    uint8_t broken;         /* the guest handed us a bad ring: stop serving */
    uint8_t pad;
    uint8_t cfg[SG_PCI_CFG_SIZE];
};

struct vblk {
    struct vblk_regs r;
    struct sg_drive *drive;
    unsigned irq, slot;
    int irq_level;
    bool held;              /* a request waits for cont (werror=enospc) */
};

static const uint32_t bar_sizes[6] = { VBLK_BAR_SIZE };

static void update_irq(struct sg_device *dev)
{
    struct vblk *v = dev->state;
    int level = (v->r.isr & 1) && !(v->r.cfg[0x05] & 0x04 /* INTx disable */);
    if (dev->vm && level != v->irq_level)
        sg_vm_set_irq(dev->vm, v->irq, level);
    v->irq_level = level;
}

/* The port window follows BAR0 while I/O decoding is enabled. */
static void update_window(struct sg_device *dev)
{
    struct vblk *v = dev->state;
    uint32_t bar = sg_pci_cfg_read(v->r.cfg, 0x10) & ~3u;
    bool io_on = v->r.cfg[0x04] & 1;
    dev->port = (uint16_t)bar;
    dev->port_len = (io_on && bar && bar < 0x10000) ? VBLK_BAR_SIZE : 0;
}

static uint32_t host_features(const struct vblk *v)
{
    return VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_BLK_SIZE | (v->drive->readonly ? VIRTIO_BLK_F_RO : 0);
}

/* QEMU's defaults for virtio-blk: rerror=report, werror=enospc (a full disk
 * stops the VM and the write is retried on cont; other errors go to the
 * guest).  Either way the main loop emits BLOCK_IO_ERROR. */
static uint8_t io_failed(struct sg_device *dev, bool is_write, const struct sg_error *e)
{
    struct vblk *v = dev->state;
    int errnum = e->errnum ? e->errnum : EIO;
    bool stop = is_write && errnum == ENOSPC;
    atomic_store(&v->drive->io_error_write, is_write);
    atomic_store(&v->drive->io_error_stop, stop);
    atomic_store(&v->drive->io_error, errnum);
    char c = 1;
    ssize_t w = write(dev->vm->notify_wr, &c, 1);
    (void)w;
    return stop ? VBLK_HOLD : VIRTIO_BLK_S_IOERR;
}

static uint8_t serve(struct sg_device *dev, struct vring_desc *chain, int n, uint32_t *written)
{
    struct vblk *v = dev->state;
    struct sg_vm *vm = dev->vm;
    uint8_t hdr_raw[16];
    if (chain[0].len < 16 || (chain[0].flags & VRING_DESC_F_WRITE))
        return VIRTIO_BLK_S_IOERR;
    void *h = sg_vm_gpa(vm, chain[0].addr, 16);
    if (!h)
        return VIRTIO_BLK_S_IOERR;
    memcpy(hdr_raw, h, 16);
    uint32_t type;
    uint64_t sector;
    memcpy(&type, hdr_raw, 4);
    memcpy(&sector, hdr_raw + 8, 8);
    uint64_t size = sg_block_size(v->drive->bs);
    uint64_t off = sector * 512;
    if (sector > size / 512)
        return VIRTIO_BLK_S_IOERR;

    sg_drive_lock(v->drive);
    uint8_t st = VIRTIO_BLK_S_OK;
    switch (type) {
    case VIRTIO_BLK_T_IN:
    case VIRTIO_BLK_T_OUT:
        if (type == VIRTIO_BLK_T_OUT && v->drive->readonly) {
            st = VIRTIO_BLK_S_IOERR;
            break;
        }
        for (int i = 1; i < n - 1; i++) {
            bool dev_writes = chain[i].flags & VRING_DESC_F_WRITE;
            void *p = sg_vm_gpa(vm, chain[i].addr, chain[i].len);
            if (!p || dev_writes != (type == VIRTIO_BLK_T_IN) || off > size || chain[i].len > size - off) {
                st = VIRTIO_BLK_S_IOERR;
                break;
            }
            struct sg_error e = { 0 };
            bool ok = type == VIRTIO_BLK_T_IN
                          ? sg_block_read(v->drive->bs, off, p, chain[i].len, &e)
                          : sg_block_write(v->drive->bs, off, p, chain[i].len, &e);
            if (!ok) {
                st = io_failed(dev, type == VIRTIO_BLK_T_OUT, &e);
                break;
            }
            if (type == VIRTIO_BLK_T_IN)
                *written += chain[i].len;
            off += chain[i].len;
        }
        break;
    case VIRTIO_BLK_T_FLUSH: {
        struct sg_error e = { 0 };
        if (!v->drive->readonly && !sg_block_flush(v->drive->bs, &e))
            st = io_failed(dev, true, &e);
        break;
    }
    case VIRTIO_BLK_T_GET_ID:
        if (n >= 3 && (chain[1].flags & VRING_DESC_F_WRITE)) {
            char id[20] = { 0 };
            /* virtio: the ID is not NUL-terminated when it fills 20 bytes */
            size_t nl = strlen(v->drive->node_name);
            memcpy(id, v->drive->node_name, nl < sizeof(id) ? nl : sizeof(id));
            uint32_t len = chain[1].len < 20 ? chain[1].len : 20;
            void *p = sg_vm_gpa(vm, chain[1].addr, len);
            if (p) {
                memcpy(p, id, len);
                *written += len;
            } else {
                st = VIRTIO_BLK_S_IOERR;
            }
        }
        break;
    default:
        st = VIRTIO_BLK_S_UNSUPP;
        break;
    }
    sg_drive_unlock(v->drive);
    return st;
}

static void process_queue(struct sg_device *dev)
{
    struct vblk *v = dev->state;
    struct sg_vm *vm = dev->vm;
    if (!v->r.queue_pfn || v->r.broken || v->held || !(v->r.status & STATUS_DRIVER_OK))
        return;
    uint64_t base = (uint64_t)v->r.queue_pfn << 12;
    const unsigned qs = VBLK_QUEUE_SIZE;
    uint64_t avail_gpa = base + 16ull * qs;
    uint64_t used_gpa = (avail_gpa + 6 + 2ull * qs + 4095) & ~4095ull;
    struct vring_desc *desc = sg_vm_gpa(vm, base, 16ull * qs);
    uint16_t *avail = sg_vm_gpa(vm, avail_gpa, 6 + 2ull * qs);
    uint16_t *used = sg_vm_gpa(vm, used_gpa, 6 + 8ull * qs);
    if (!desc || !avail || !used) {
        v->r.broken = 1;
        return;
    }
    uint16_t avail_idx = __atomic_load_n(&avail[1], __ATOMIC_ACQUIRE);
    /* Bounded: at most one ring's worth per notify. */
    for (unsigned budget = 0; v->r.last_avail != avail_idx && budget < qs; budget++) {
        uint16_t head = avail[2 + v->r.last_avail % qs];
        struct vring_desc chain[VBLK_QUEUE_SIZE];
        int n = 0;
        uint16_t i = head;
        for (;;) {
            if (i >= qs || n >= (int)qs) {
                v->r.broken = 1;
                v->r.status |= STATUS_FAILED;
                return;
            }
            memcpy(&chain[n], &desc[i], sizeof(chain[n]));
            n++;
            if (!(chain[n - 1].flags & VRING_DESC_F_NEXT))
                break;
            i = chain[n - 1].next;
        }
        uint32_t written = 0;
        uint8_t st = VIRTIO_BLK_S_IOERR;
        struct vring_desc *sd = &chain[n - 1];
        if (n >= 2 && (sd->flags & VRING_DESC_F_WRITE) && sd->len >= 1)
            st = serve(dev, chain, n, &written);
        if (st == VBLK_HOLD) {
            v->held = true;   /* left in the ring; the VM stops, cont retries */
            break;
        }
        uint8_t *sp = n >= 2 ? sg_vm_gpa(vm, sd->addr, 1) : NULL;
        if (sp) {
            *sp = st;
            written += 1;
        }
        uint16_t uidx = used[1];
        uint32_t elem[2] = { head, written };
        memcpy((uint8_t *)used + 4 + 8u * (uidx % qs), elem, 8);
        __atomic_store_n(&used[1], (uint16_t)(uidx + 1), __ATOMIC_RELEASE);
        v->r.last_avail++;
    }
    v->r.isr |= 1;
    update_irq(dev);
}

static void vblk_out(struct sg_device *dev, uint16_t off, const void *data, unsigned size)
{
    struct vblk *v = dev->state;
    uint32_t val = 0;
    memcpy(&val, data, size < 4 ? size : 4);
    switch (off) {
    case 4: v->r.guest_features = val & host_features(v); break;
    case 8:
        if (v->r.queue_sel == 0) {
            v->r.queue_pfn = val;
            v->r.last_avail = 0;
            if (val) {
                /* A fresh ring starts from the used index the guest sees. */
                uint64_t base = (uint64_t)val << 12;
                uint64_t used_gpa = (base + 16ull * VBLK_QUEUE_SIZE + 6 + 2ull * VBLK_QUEUE_SIZE + 4095) & ~4095ull;
                uint16_t *used = sg_vm_gpa(dev->vm, used_gpa, 4);
                if (used)
                    v->r.last_avail = used[1];
            }
        }
        break;
    case 14: v->r.queue_sel = (uint16_t)val; break;
    case 16: if (val == 0) process_queue(dev); break;
    case 18:
        v->r.status = (uint8_t)val;
        if (val == 0) {     /* device reset */
            v->r.guest_features = 0;
            v->r.queue_pfn = 0;
            v->r.last_avail = 0;
            v->r.isr = 0;
            v->r.broken = 0;
        }
        break;
    default: break;
    }
    update_irq(dev);
}

static void vblk_in(struct sg_device *dev, uint16_t off, void *data, unsigned size)
{
    struct vblk *v = dev->state;
    uint8_t regs[VBLK_BAR_SIZE];
    memset(regs, 0, sizeof(regs));
    uint32_t hf = host_features(v);
    memcpy(regs + 0, &hf, 4);
    memcpy(regs + 4, &v->r.guest_features, 4);
    memcpy(regs + 8, v->r.queue_sel == 0 ? &v->r.queue_pfn : &(uint32_t){ 0 }, 4);
    uint16_t qn = v->r.queue_sel == 0 ? VBLK_QUEUE_SIZE : 0;
    memcpy(regs + 12, &qn, 2);
    memcpy(regs + 14, &v->r.queue_sel, 2);
    regs[18] = v->r.status;
    regs[19] = v->r.isr;
    uint64_t cap = sg_block_size(v->drive->bs) / 512;
    memcpy(regs + 20, &cap, 8);
    uint32_t blk_size = 512;
    memcpy(regs + 20 + 20, &blk_size, 4);
    memset(data, 0xff, size);
    if (off + size <= sizeof(regs))
        memcpy(data, regs + off, size);
    if (off == 19) {        /* reading ISR acknowledges it */
        v->r.isr = 0;
        update_irq(dev);
    }
}

static uint32_t vblk_cfg_read(struct sg_device *dev, unsigned reg)
{
    struct vblk *v = dev->state;
    return sg_pci_cfg_read(v->r.cfg, reg);
}

static void vblk_cfg_write(struct sg_device *dev, unsigned reg, uint32_t val, uint32_t mask)
{
    struct vblk *v = dev->state;
    sg_pci_cfg_write(v->r.cfg, bar_sizes, reg, val, mask);
    update_window(dev);
    update_irq(dev);
}

static void vblk_reset(struct sg_device *dev)
{
    struct vblk *v = dev->state;
    memset(&v->r, 0, sizeof(v->r));
    v->r.version = VBLK_STATE_VERSION;
    sg_pci_cfg_init(v->r.cfg, 0x1af4, 0x1001, 0x01800000, 0x1af4, 2);
    /* Firmware's job, done here: BAR0 assigned, INTA routed. */
    uint32_t bar = (VBLK_IO_BASE + 0x100u * v->slot) | 1;
    memcpy(v->r.cfg + 0x10, &bar, 4);
    v->r.cfg[0x3c] = (uint8_t)v->irq;
    v->r.cfg[0x3d] = 1;
    v->irq_level = -1;
    update_window(dev);
    update_irq(dev);
}

static size_t vblk_save(struct sg_device *dev, void *buf, size_t cap)
{
    struct vblk *v = dev->state;
    if (cap < sizeof(v->r))
        return 0;
    memcpy(buf, &v->r, sizeof(v->r));
    return sizeof(v->r);
}

static bool vblk_load(struct sg_device *dev, const void *buf, size_t len, struct sg_error *err)
{
    struct vblk *v = dev->state;
    struct vblk_regs r;
    if (len != sizeof(r)) {
        sg_error_set(err, "%s: saved state has %zu bytes, expected %zu", dev->name, len, sizeof(r));
        return false;
    }
    memcpy(&r, buf, sizeof(r));
    if (r.version != VBLK_STATE_VERSION) {
        sg_error_set(err, "%s: unsupported state version %u", dev->name, r.version);
        return false;
    }
    v->r = r;
    v->irq_level = -1;
    update_window(dev);
    update_irq(dev);
    return true;
}

static void vblk_destroy(struct sg_device *dev)
{
    free(dev->state);
    free(dev);
}

static const struct sg_device_ops vblk_ops;

void sg_virtio_blk_restart(struct sg_device *dev)
{
    if (dev->ops != &vblk_ops || !((struct vblk *)dev->state)->held)
        return;
    ((struct vblk *)dev->state)->held = false;
    process_queue(dev);
}

static const struct sg_device_ops vblk_ops = {
    .type = "virtio-blk",
    .pio_in = vblk_in,
    .pio_out = vblk_out,
    .cfg_read = vblk_cfg_read,
    .cfg_write = vblk_cfg_write,
    .save = vblk_save,
    .load = vblk_load,
    .reset = vblk_reset,
    .destroy = vblk_destroy,
};

struct sg_device *sg_virtio_blk_create(struct sg_drive *drive, unsigned slot, unsigned index,
                                       unsigned irq, struct sg_error *err)
{
    struct sg_device *dev = calloc(1, sizeof(*dev));
    struct vblk *v = calloc(1, sizeof(*v));
    if (!dev || !v) {
        free(dev);
        free(v);
        sg_error_set(err, "out of memory");
        return NULL;
    }
    dev->ops = &vblk_ops;
    snprintf(dev->name, sizeof(dev->name), "virtio-blk%u", index);
    dev->pci_slot = (int)slot;
    dev->state = v;
    v->drive = drive;
    v->irq = irq;
    v->slot = slot;
    vblk_reset(dev);
    return dev;
}
