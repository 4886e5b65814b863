/* rtc.c: the PC's CMOS real-time clock (MC146818A) at ports 0x70 (index;
 * bit 7 is the NMI mask, ignored) and 0x71 (data), interrupt on ISA IRQ 8.
 *
 * The clock is the host's wall clock (UTC, as QEMU's default -rtc
 * base=utc) plus an offset the guest changes by setting the time; the
 * offset is what is saved, so after a load the clock still follows the
 * host's and reads what it read at the save plus the time in between, as
 * QEMU's rtc clock=host does.  Time registers are computed on each read
 * (BCD or binary, 12 or 24 hour as register B says).  Update-in-progress
 * (register A bit 7) reads 1 during the last 244 us of each host second.
 * Register C's flags (update-ended, alarm, periodic) are raised by
 * sg_rtc_tick, which the main loop calls about every 0.1 s: interrupts
 * come at most that often, enough for rtc_cmos (alarms, update-ended
 * interrupts for hwclock), not for high periodic rates.  Reading C clears
 * it and lowers IRQ 8.  Registers 0x0e-0x7f are battery-backed RAM;
 * 0x32 holds the century (the FADT's CENTURY field points there). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "devices/rtc.h"
#include "vm.h"

#define RTC_STATE_VERSION 1

enum { REG_SEC = 0, REG_ASEC, REG_MIN, REG_AMIN, REG_HOUR, REG_AHOUR, REG_WDAY, REG_MDAY,
       REG_MON, REG_YEAR, REG_A, REG_B, REG_C, REG_D, REG_CENTURY = 0x32 };
enum { A_UIP = 0x80 };
enum { B_SET = 0x80, B_PIE = 0x40, B_AIE = 0x20, B_UIE = 0x10, B_DM = 0x04, B_24H = 0x02 };
enum { C_IRQF = 0x80, C_PF = 0x40, C_AF = 0x20, C_UF = 0x10 };
enum { D_VRT = 0x80 };

struct rtc_regs {          /* saved verbatim */
    uint32_t version;
    uint8_t index;
    uint8_t pad[3];
    int64_t offset_s;      /* guest RTC time - host UTC, seconds */
    int64_t last_s;        /* guest time (s) of the last tick's look */
    uint8_t cmos[128];
};

struct rtc {
    struct rtc_regs r;
    unsigned irq;
    int irq_level;
    uint64_t host_ns_fake;  /* tests: host wall clock in ns when nonzero */
};

static uint64_t host_now_ns(const struct rtc *s)
{
    if (s->host_ns_fake)
        return s->host_ns_fake;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t guest_now_s(const struct rtc *s)
{
    return (int64_t)(host_now_ns(s) / 1000000000u) + s->r.offset_s;
}

static uint8_t to_reg(const struct rtc *s, int v)
{
    if (s->r.cmos[REG_B] & B_DM)
        return (uint8_t)v;
    return (uint8_t)(((v / 10) << 4) | (v % 10));
}

static int from_reg(const struct rtc *s, uint8_t v)
{
    if (s->r.cmos[REG_B] & B_DM)
        return v;
    return ((v >> 4) & 0x0f) * 10 + (v & 0x0f);
}

static uint8_t hour_to_reg(const struct rtc *s, int h)
{
    if (s->r.cmos[REG_B] & B_24H)
        return to_reg(s, h);
    int h12 = h % 12 ? h % 12 : 12;
    return (uint8_t)(to_reg(s, h12) | (h >= 12 ? 0x80 : 0));
}

static int hour_from_reg(const struct rtc *s, uint8_t v)
{
    if (s->r.cmos[REG_B] & B_24H)
        return from_reg(s, v);
    int h = from_reg(s, v & 0x7f) % 12;
    return (v & 0x80) ? h + 12 : h;
}

/* The time registers from the clock (not while the guest sets them). */
static void latch_time(struct rtc *s)
{
    if (s->r.cmos[REG_B] & B_SET)
        return;
    time_t t = (time_t)guest_now_s(s);
    struct tm tm;
    gmtime_r(&t, &tm);
    s->r.cmos[REG_SEC] = to_reg(s, tm.tm_sec);
    s->r.cmos[REG_MIN] = to_reg(s, tm.tm_min);
    s->r.cmos[REG_HOUR] = hour_to_reg(s, tm.tm_hour);
    s->r.cmos[REG_WDAY] = to_reg(s, tm.tm_wday + 1);
    s->r.cmos[REG_MDAY] = to_reg(s, tm.tm_mday);
    s->r.cmos[REG_MON] = to_reg(s, tm.tm_mon + 1);
    s->r.cmos[REG_YEAR] = to_reg(s, tm.tm_year % 100);
    s->r.cmos[REG_CENTURY] = to_reg(s, (tm.tm_year + 1900) / 100);
}

/* SET cleared: the time the guest wrote becomes the clock's. */
static void commit_time(struct rtc *s)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    tm.tm_sec = from_reg(s, s->r.cmos[REG_SEC]);
    tm.tm_min = from_reg(s, s->r.cmos[REG_MIN]);
    tm.tm_hour = hour_from_reg(s, s->r.cmos[REG_HOUR]);
    tm.tm_mday = from_reg(s, s->r.cmos[REG_MDAY]);
    tm.tm_mon = from_reg(s, s->r.cmos[REG_MON]) - 1;
    tm.tm_year = from_reg(s, s->r.cmos[REG_CENTURY]) * 100 + from_reg(s, s->r.cmos[REG_YEAR]) - 1900;
    int64_t t = (int64_t)timegm(&tm);
    s->r.offset_s = t - (int64_t)(host_now_ns(s) / 1000000000u);
    s->r.last_s = t;
}

static void update_irq(struct sg_device *dev)
{
    struct rtc *s = dev->state;
    uint8_t c = s->r.cmos[REG_C] & (C_PF | C_AF | C_UF);
    uint8_t en = s->r.cmos[REG_B] & (B_PIE | B_AIE | B_UIE);   /* same bit positions */
    int level = (c & en) != 0;
    s->r.cmos[REG_C] = (uint8_t)(c | (level ? C_IRQF : 0));
    if (dev->vm && level != s->irq_level)
        sg_vm_set_irq(dev->vm, s->irq, level);
    s->irq_level = level;
}

static bool alarm_matches(const struct rtc *s, const struct tm *tm)
{
    /* 0xc0-0xff in an alarm register matches any value */
    const uint8_t *c = s->r.cmos;
    return ((c[REG_ASEC] & 0xc0) == 0xc0 || from_reg(s, c[REG_ASEC]) == tm->tm_sec) &&
           ((c[REG_AMIN] & 0xc0) == 0xc0 || from_reg(s, c[REG_AMIN]) == tm->tm_min) &&
           ((c[REG_AHOUR] & 0xc0) == 0xc0 || hour_from_reg(s, c[REG_AHOUR]) == tm->tm_hour);
}

void sg_rtc_tick(struct sg_device *dev)
{
    struct rtc *s = dev->state;
    uint8_t rs = s->r.cmos[REG_A] & 0x0f;
    if (rs && (s->r.cmos[REG_B] & B_PIE))
        s->r.cmos[REG_C] |= C_PF;
    int64_t now = guest_now_s(s);
    if (!(s->r.cmos[REG_B] & B_SET) && now != s->r.last_s) {
        /* every second passed since the last look (a few at most: after
         * a long pause only the last ones matter) */
        int64_t from = now - s->r.last_s > 4 || now < s->r.last_s ? now - 1 : s->r.last_s;
        for (int64_t t = from + 1; t <= now; t++) {
            time_t tt = (time_t)t;
            struct tm tm;
            gmtime_r(&tt, &tm);
            s->r.cmos[REG_C] |= C_UF;
            if (alarm_matches(s, &tm))
                s->r.cmos[REG_C] |= C_AF;
        }
        s->r.last_s = now;
    }
    update_irq(dev);
}

static void rtc_out(struct sg_device *dev, uint16_t off, const void *data, unsigned size)
{
    struct rtc *s = dev->state;
    uint8_t v = *(const uint8_t *)data;
    (void)size;
    if (off == 0) {
        s->r.index = v & 0x7f;
        return;
    }
    uint8_t i = s->r.index;
    switch (i) {
    case REG_A:
        s->r.cmos[REG_A] = (uint8_t)((s->r.cmos[REG_A] & A_UIP) | (v & 0x7f));
        break;
    case REG_B: {
        uint8_t old = s->r.cmos[REG_B];
        if ((v & B_SET) && !(old & B_SET))
            latch_time(s);       /* the guest edits the current time */
        s->r.cmos[REG_B] = v;
        if ((old & B_SET) && !(v & B_SET))
            commit_time(s);
        break;
    }
    case REG_C:
    case REG_D:
        break;                   /* read-only */
    default:
        s->r.cmos[i] = v;
        break;
    }
    update_irq(dev);
}

static void rtc_in(struct sg_device *dev, uint16_t off, void *data, unsigned size)
{
    struct rtc *s = dev->state;
    uint8_t v = 0xff;
    if (off == 1) {
        uint8_t i = s->r.index;
        switch (i) {
        case REG_SEC: case REG_MIN: case REG_HOUR: case REG_WDAY: case REG_MDAY:
        case REG_MON: case REG_YEAR: case REG_CENTURY:
            latch_time(s);
            v = s->r.cmos[i];
            break;
        case REG_A: {
            bool uip = !(s->r.cmos[REG_B] & B_SET) &&
                       host_now_ns(s) % 1000000000u >= 1000000000u - 244000u;
            v = (uint8_t)((s->r.cmos[REG_A] & 0x7f) | (uip ? A_UIP : 0));
            break;
        }
        case REG_C:
            v = s->r.cmos[REG_C];
            s->r.cmos[REG_C] = 0;
            update_irq(dev);
            break;
        case REG_D:
            v = D_VRT;
            break;
        default:
            v = s->r.cmos[i];
            break;
        }
    }
    memset(data, 0, size);
    *(uint8_t *)data = v;
}

static void rtc_reset(struct sg_device *dev)
{
    struct rtc *s = dev->state;
    int64_t offset = s->r.offset_s;   /* the battery keeps time and RAM over a reset */
    uint8_t ram[128];
    memcpy(ram, s->r.cmos, sizeof(ram));
    memset(&s->r, 0, sizeof(s->r));
    memcpy(s->r.cmos, ram, sizeof(ram));
    s->r.version = RTC_STATE_VERSION;
    s->r.offset_s = offset;
    s->r.cmos[REG_A] = 0x26;          /* 32.768 kHz divider, 1024 Hz rate */
    s->r.cmos[REG_B] = B_24H;         /* BCD, 24 hour, no interrupts */
    s->r.cmos[REG_C] = 0;
    s->r.cmos[REG_D] = D_VRT;
    s->r.last_s = guest_now_s(s);
    latch_time(s);
    update_irq(dev);
}

static size_t rtc_save(struct sg_device *dev, void *buf, size_t cap)
{
    struct rtc *s = dev->state;
    if (cap < sizeof(s->r))
        return 0;
    memcpy(buf, &s->r, sizeof(s->r));
    return sizeof(s->r);
}

static bool rtc_load(struct sg_device *dev, const void *buf, size_t len, struct sg_error *err)
{
    struct rtc *s = dev->state;
    struct rtc_regs r;
    if (len != sizeof(r)) {
        sg_error_set(err, "%s: saved state has %zu bytes, expected %zu", dev->name, len, sizeof(r));
        return false;
    }
    memcpy(&r, buf, sizeof(r));
    if (r.version != RTC_STATE_VERSION) {
        sg_error_set(err, "%s: saved state is invalid", dev->name);
        return false;
    }
    s->r = r;
    s->r.index &= 0x7f;
    s->r.last_s = guest_now_s(s);    /* no burst of update interrupts for the gap */
    s->irq_level = -1;               /* re-drive the line */
    update_irq(dev);
    return true;
}

static void rtc_describe(struct sg_device *dev, char *out, size_t cap)
{
    struct rtc *s = dev->state;
    snprintf(out, cap, "rtc b=%#x c=%#x line=%d", s->r.cmos[REG_B], s->r.cmos[REG_C], s->irq_level);
}

static void rtc_destroy(struct sg_device *dev)
{
    free(dev->state);
    free(dev);
}

static const struct sg_device_ops rtc_ops = {
    .type = "rtc",
    .pio_in = rtc_in,
    .pio_out = rtc_out,
    .save = rtc_save,
    .load = rtc_load,
    .reset = rtc_reset,
    .describe = rtc_describe,
    .destroy = rtc_destroy,
};

struct sg_device *sg_rtc_create(unsigned irq, struct sg_error *err)
{
    struct sg_device *dev = calloc(1, sizeof(*dev));
    struct rtc *s = calloc(1, sizeof(*s));
    if (!dev || !s) {
        free(dev);
        free(s);
        sg_error_set(err, "out of memory");
        return NULL;
    }
    dev->ops = &rtc_ops;
    snprintf(dev->name, sizeof(dev->name), "rtc");
    dev->port = 0x70;
    dev->port_len = 2;
    dev->pci_slot = -1;
    dev->state = s;
    s->irq = irq;
    s->irq_level = 0;
    rtc_reset(dev);
    return dev;
}

void sg_rtc_set_fake_clock(struct sg_device *dev, uint64_t host_ns)
{
    struct rtc *s = dev->state;
    s->host_ns_fake = host_ns;
}
