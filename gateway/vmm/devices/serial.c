/* serial.c: 16550A UART.  The state struct mirrors the registers; every
 * access ends with update_irq(), which recomputes IIR and the IRQ line from
 * that state alone (so a loaded state needs nothing else). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/serial.h"
#include "vm.h"

#define UART_FIFO 64
#define SERIAL_STATE_VERSION 1

enum { IER_RDI = 1, IER_THRI = 2 };
enum { IIR_NONE = 1, IIR_THRI = 2, IIR_RDI = 4, IIR_FIFO = 0xc0 };
enum { LSR_DR = 1, LSR_THRE = 0x20, LSR_TEMT = 0x40 };
enum { MCR_OUT2 = 8, MCR_LOOP = 0x10 };
enum { LCR_DLAB = 0x80 };
enum { FCR_ENABLE = 1, FCR_CLEAR_RX = 2 };

struct serial_regs {      /* saved verbatim: no pointers, fixed layout */
    uint32_t version;
    uint8_t dll, dlm, ier, iir, fcr, lcr, mcr, lsr, msr, scr;
    uint8_t thr_ipending;
    uint8_t pad;
    uint32_t rx_head, rx_count;
    uint8_t rx[UART_FIFO];
};

struct serial {
    struct serial_regs r;
    unsigned irq;
    int out_fd;
    int irq_level;
    uint64_t accesses, seen;   /* guest register accesses; as of the last watchdog look */
    unsigned quiet;            /* watchdog looks since the guest last touched the UART */
};

static void update_irq(struct sg_device *dev)
{
    struct serial *s = dev->state;
    uint8_t iir = IIR_NONE;
    if ((s->r.ier & IER_RDI) && s->r.rx_count)
        iir = IIR_RDI;
    else if ((s->r.ier & IER_THRI) && s->r.thr_ipending)
        iir = IIR_THRI;
    s->r.lsr = (uint8_t)((s->r.lsr & ~LSR_DR) | LSR_THRE | LSR_TEMT | (s->r.rx_count ? LSR_DR : 0));
    s->r.iir = (uint8_t)(iir | ((s->r.fcr & FCR_ENABLE) ? IIR_FIFO : 0));
    /* A PC routes the UART interrupt through OUT2. */
    int level = !(iir & IIR_NONE) && (s->r.mcr & MCR_OUT2);
    if (dev->vm && level != s->irq_level)
        sg_vm_set_irq(dev->vm, s->irq, level);
    s->irq_level = level;
}

static void rx_push(struct serial *s, uint8_t c)
{
    if (s->r.rx_count < UART_FIFO) {
        s->r.rx[(s->r.rx_head + s->r.rx_count) % UART_FIFO] = c;
        s->r.rx_count++;
    }
}

static void serial_out(struct sg_device *dev, uint16_t off, const void *data, unsigned size)
{
    struct serial *s = dev->state;
    uint8_t v = *(const uint8_t *)data;
    (void)size;
    s->accesses++;
    switch (off) {
    case 0:
        if (s->r.lcr & LCR_DLAB) {
            s->r.dll = v;
        } else if (s->r.mcr & MCR_LOOP) {
            rx_push(s, v);
        } else {
            if (s->out_fd >= 0) {
                /* The console is best effort: a full pipe loses output
                 * rather than stalling the vCPU forever. */
                ssize_t w;
                do
                    w = write(s->out_fd, &v, 1);
                while (w < 0 && errno == EINTR);
            }
            s->r.thr_ipending = 1;
        }
        break;
    case 1:
        if (s->r.lcr & LCR_DLAB) {
            s->r.dlm = v;
        } else {
            /* Enabling THRI with an empty THR raises it at once. */
            if (!(s->r.ier & IER_THRI) && (v & IER_THRI))
                s->r.thr_ipending = 1;
            s->r.ier = v & 0x0f;
        }
        break;
    case 2:
        s->r.fcr = v & 0xc9;
        if (v & FCR_CLEAR_RX)
            s->r.rx_count = s->r.rx_head = 0;
        break;
    case 3: s->r.lcr = v; break;
    case 4: s->r.mcr = v & 0x1f; break;
    case 7: s->r.scr = v; break;
    default: break;
    }
    update_irq(dev);
}

static void serial_in(struct sg_device *dev, uint16_t off, void *data, unsigned size)
{
    struct serial *s = dev->state;
    uint8_t v = 0;
    s->accesses++;
    switch (off) {
    case 0:
        if (s->r.lcr & LCR_DLAB) {
            v = s->r.dll;
        } else if (s->r.rx_count) {
            v = s->r.rx[s->r.rx_head];
            s->r.rx_head = (s->r.rx_head + 1) % UART_FIFO;
            s->r.rx_count--;
        }
        break;
    case 1: v = (s->r.lcr & LCR_DLAB) ? s->r.dlm : s->r.ier; break;
    case 2:
        v = s->r.iir;
        if ((v & 0x0f) == IIR_THRI)
            s->r.thr_ipending = 0;
        break;
    case 3: v = s->r.lcr; break;
    case 4: v = s->r.mcr; break;
    case 5: v = s->r.lsr; break;
    case 6:
        v = (s->r.mcr & MCR_LOOP) ? (uint8_t)((s->r.mcr & 0x0f) << 4) : 0xb0; /* DCD DSR CTS */
        break;
    case 7: v = s->r.scr; break;
    default: break;
    }
    memset(data, 0, size);
    *(uint8_t *)data = v;
    update_irq(dev);
}

static void serial_reset(struct sg_device *dev)
{
    struct serial *s = dev->state;
    memset(&s->r, 0, sizeof(s->r));
    s->r.version = SERIAL_STATE_VERSION;
    s->r.iir = IIR_NONE;
    s->r.lsr = LSR_THRE | LSR_TEMT;
    s->r.msr = 0xb0;
    update_irq(dev);
}

static size_t serial_save(struct sg_device *dev, void *buf, size_t cap)
{
    struct serial *s = dev->state;
    if (cap < sizeof(s->r))
        return 0;
    memcpy(buf, &s->r, sizeof(s->r));
    return sizeof(s->r);
}

static bool serial_load(struct sg_device *dev, const void *buf, size_t len, struct sg_error *err)
{
    struct serial *s = dev->state;
    struct serial_regs r;
    if (len != sizeof(r)) {
        sg_error_set(err, "%s: saved state has %zu bytes, expected %zu", dev->name, len, sizeof(r));
        return false;
    }
    memcpy(&r, buf, sizeof(r));
    if (r.version != SERIAL_STATE_VERSION || r.rx_head >= UART_FIFO || r.rx_count > UART_FIFO) {
        sg_error_set(err, "%s: saved state is invalid", dev->name);
        return false;
    }
    s->r = r;
    s->irq_level = -1;   /* force the line to be re-driven */
    update_irq(dev);
    return true;
}

static void serial_describe(struct sg_device *dev, char *out, size_t cap)
{
    struct serial *s = dev->state;
    snprintf(out, cap, "uart ier=%#x iir=%#x lsr=%#x mcr=%#x lcr=%#x thri=%u rx=%u line=%d acc=%llu",
             s->r.ier, s->r.iir, s->r.lsr, s->r.mcr, s->r.lcr, s->r.thr_ipending, s->r.rx_count,
             s->irq_level, (unsigned long long)s->accesses);
}

static void serial_destroy(struct sg_device *dev)
{
    free(dev->state);
    free(dev);
}

static const struct sg_device_ops serial_ops = {
    .type = "serial",
    .pio_in = serial_in,
    .pio_out = serial_out,
    .save = serial_save,
    .load = serial_load,
    .reset = serial_reset,
    .describe = serial_describe,
    .destroy = serial_destroy,
};

struct sg_device *sg_serial_create(uint16_t port, unsigned irq, int out_fd, struct sg_error *err)
{
    struct sg_device *dev = calloc(1, sizeof(*dev));
    struct serial *s = calloc(1, sizeof(*s));
    if (!dev || !s) {
        free(dev);
        free(s);
        sg_error_set(err, "out of memory");
        return NULL;
    }
    dev->ops = &serial_ops;
    snprintf(dev->name, sizeof(dev->name), "serial0");
    dev->port = port;
    dev->port_len = 8;
    dev->pci_slot = -1;
    dev->state = s;
    s->irq = irq;
    s->out_fd = out_fd;
    serial_reset(dev);
    return dev;
}

size_t sg_serial_rx_room(struct sg_device *dev)
{
    struct serial *s = dev->state;
    return UART_FIFO - s->r.rx_count;
}

size_t sg_serial_receive(struct sg_device *dev, const void *buf, size_t len)
{
    struct serial *s = dev->state;
    size_t n = 0;
    for (; n < len && s->r.rx_count < UART_FIFO; n++)
        rx_push(s, ((const uint8_t *)buf)[n]);
    update_irq(dev);
    return n;
}

/* The interrupt line is edge-triggered (ISA IRQ 4) and stays up while
 * anything is pending, so one lost edge would leave the guest waiting for
 * an interrupt that never comes: its console then stops dead (seen in the
 * nested test bed, under QEMU 7.2 as under snapgate-vmm).  A line held up
 * for `looks` calls in a row with no register access from the guest is
 * dropped and raised again; a guest that was only slow sees one spurious
 * interrupt, which the 8250 driver reads IIR for and dismisses. */
bool sg_serial_watchdog(struct sg_device *dev, unsigned looks)
{
    struct serial *s = dev->state;
    if (s->accesses != s->seen || s->irq_level != 1) {
        s->seen = s->accesses;
        s->quiet = 0;
        return false;
    }
    if (++s->quiet < looks)
        return false;
    s->quiet = 0;
    if (dev->vm) {
        sg_vm_set_irq(dev->vm, s->irq, 0);
        sg_vm_set_irq(dev->vm, s->irq, 1);
    }
    return true;
}

void sg_serial_set_out_fd(struct sg_device *dev, int fd)
{
    struct serial *s = dev->state;
    s->out_fd = fd;
}
