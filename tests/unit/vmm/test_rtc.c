/* The CMOS clock alone: time registers from a fake host clock (BCD and
 * binary, 12/24 h), setting the time, update-in-progress, register D,
 * update-ended and alarm interrupts through register C, save/load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "devices/rtc.h"
#include "vm.h"

static int irq_level = -1, irq_calls;

void sg_vm_set_irq(struct sg_vm *vm, unsigned irq, int level)
{
    (void)vm;
    assert_int_equal(irq, 8);
    irq_level = level;
    irq_calls++;
}

static uint8_t rd(struct sg_device *d, uint8_t reg)
{
    uint8_t v = 0;
    d->ops->pio_out(d, 0, &reg, 1);
    d->ops->pio_in(d, 1, &v, 1);
    return v;
}

static void wr(struct sg_device *d, uint8_t reg, uint8_t v)
{
    d->ops->pio_out(d, 0, &reg, 1);
    d->ops->pio_out(d, 1, &v, 1);
}

#define S 1000000000ull
/* 2026-12-02 13:45:07 UTC (a Wednesday) */
#define T0 1796219107ull

static void test_time(void **state)
{
    (void)state;
    struct sg_device *d = sg_rtc_create(8, NULL);
    sg_rtc_set_fake_clock(d, T0 * S + 1000);
    assert_int_equal(rd(d, 0x0d), 0x80);            /* valid RAM and time */
    assert_int_equal(rd(d, 0x0b), 0x02);            /* BCD, 24 h */
    assert_int_equal(rd(d, 0), 0x07);
    assert_int_equal(rd(d, 2), 0x45);
    assert_int_equal(rd(d, 4), 0x13);
    assert_int_equal(rd(d, 6), 4);                  /* 1 = Sunday */
    assert_int_equal(rd(d, 7), 0x02);
    assert_int_equal(rd(d, 8), 0x12);
    assert_int_equal(rd(d, 9), 0x26);
    assert_int_equal(rd(d, 0x32), 0x20);
    assert_int_equal(rd(d, 0x0a) & 0x80, 0);        /* not updating */
    sg_rtc_set_fake_clock(d, T0 * S + S - 100000);  /* the last 244 us of the second */
    assert_int_equal(rd(d, 0x0a) & 0x80, 0x80);
    sg_rtc_set_fake_clock(d, (T0 + 61) * S);
    assert_int_equal(rd(d, 0), 0x08);
    assert_int_equal(rd(d, 2), 0x46);
    /* binary, 12 hour: 1 PM */
    wr(d, 0x0b, 0x04);
    assert_int_equal(rd(d, 4), 0x81);
    assert_int_equal(rd(d, 0), 8);
    /* CMOS RAM keeps what is written */
    wr(d, 0x40, 0x5a);
    assert_int_equal(rd(d, 0x40), 0x5a);
    d->ops->destroy(d);
}

static void test_set_time(void **state)
{
    (void)state;
    struct sg_device *d = sg_rtc_create(8, NULL);
    sg_rtc_set_fake_clock(d, T0 * S);
    wr(d, 0x0b, 0x82);               /* SET, BCD, 24 h */
    wr(d, 0, 0x30);
    wr(d, 2, 0x10);
    wr(d, 4, 0x09);
    wr(d, 7, 0x01);
    wr(d, 8, 0x01);
    wr(d, 9, 0x30);
    wr(d, 0x32, 0x20);
    sg_rtc_set_fake_clock(d, (T0 + 100) * S);   /* frozen while SET */
    assert_int_equal(rd(d, 0), 0x30);
    wr(d, 0x0b, 0x02);
    sg_rtc_set_fake_clock(d, (T0 + 105) * S);
    assert_int_equal(rd(d, 0), 0x35);           /* 2030-01-01 09:10:35 */
    assert_int_equal(rd(d, 9), 0x30);
    assert_int_equal(rd(d, 4), 0x09);
    d->ops->destroy(d);
}

static void test_interrupts_and_state(void **state)
{
    (void)state;
    struct sg_vm vm;
    struct sg_device *d = sg_rtc_create(8, NULL);
    d->vm = &vm;
    sg_rtc_set_fake_clock(d, T0 * S);
    sg_rtc_tick(d);
    irq_calls = 0;
    irq_level = 0;
    sg_rtc_set_fake_clock(d, (T0 + 1) * S);
    sg_rtc_tick(d);                                 /* UF set, but UIE off */
    assert_int_equal(irq_calls, 0);
    assert_int_equal(rd(d, 0x0c), 0x10);            /* UF, no IRQF; read clears */
    assert_int_equal(rd(d, 0x0c), 0);
    wr(d, 0x0b, 0x12);                              /* UIE */
    sg_rtc_set_fake_clock(d, (T0 + 2) * S);
    sg_rtc_tick(d);
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(d, 0x0c), 0x90);            /* IRQF | UF */
    assert_int_equal(irq_level, 0);
    /* alarm at 13:45:11 (any hour: 0xc0 = do not care) */
    wr(d, 0x0b, 0x22);                              /* AIE only */
    wr(d, 1, 0x11);
    wr(d, 3, 0x45);
    wr(d, 5, 0xc0);
    sg_rtc_set_fake_clock(d, (T0 + 3) * S);
    sg_rtc_tick(d);
    assert_int_equal(irq_level, 0);                 /* 13:45:10: not yet */
    (void)rd(d, 0x0c);
    sg_rtc_set_fake_clock(d, (T0 + 3) * S + S / 2);
    sg_rtc_tick(d);
    assert_int_equal(irq_level, 0);
    sg_rtc_set_fake_clock(d, (T0 + 3) * S + S);
    sg_rtc_tick(d);
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(d, 0x0c) & 0xa0, 0xa0);     /* IRQF | AF */

    /* save, then load into a new clock 60 s later: time goes on from the
     * same offset to the host's clock, the pending line is re-driven */
    wr(d, 0x0b, 0x82);
    wr(d, 9, 0x31);                                 /* year 2031 */
    wr(d, 0x0b, 0x12);
    sg_rtc_set_fake_clock(d, (T0 + 5) * S);
    sg_rtc_tick(d);
    assert_int_equal(irq_level, 1);                 /* UF with UIE, C not read */
    uint8_t buf[512];
    size_t n = d->ops->save(d, buf, sizeof(buf));
    assert_true(n > 0);
    struct sg_device *e = sg_rtc_create(8, NULL);
    e->vm = &vm;
    sg_rtc_set_fake_clock(e, (T0 + 65) * S);
    irq_level = 0;
    assert_true(e->ops->load(e, buf, n, NULL));
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(e, 9), 0x31);
    assert_int_equal(rd(e, 2), 0x46);               /* 13:46:12 */
    assert_int_equal(rd(e, 0), 0x12);
    assert_int_equal(rd(e, 0x0c) & 0x90, 0x90);
    assert_int_equal(irq_level, 0);
    struct sg_error err = { 0 };
    assert_false(e->ops->load(e, buf, n - 1, &err));
    d->ops->destroy(d);
    e->ops->destroy(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_set_time),
        cmocka_unit_test(test_interrupts_and_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
