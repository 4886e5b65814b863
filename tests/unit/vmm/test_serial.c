/* The 16550A alone: registers, FIFO, IIR/IRQ rules, save/load. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "devices/serial.h"
#include "vm.h"

static int irq_level = -1, irq_calls;

void sg_vm_set_irq(struct sg_vm *vm, unsigned irq, int level)
{
    (void)vm;
    assert_int_equal(irq, 4);
    irq_level = level;
    irq_calls++;
}

static uint8_t rd(struct sg_device *d, uint16_t off)
{
    uint8_t v = 0;
    d->ops->pio_in(d, off, &v, 1);
    return v;
}

static void wr(struct sg_device *d, uint16_t off, uint8_t v)
{
    d->ops->pio_out(d, off, &v, 1);
}

static void test_transmit(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe(p), 0);
    struct sg_device *d = sg_serial_create(0x3f8, 4, p[1], NULL);
    assert_non_null(d);
    assert_int_equal(rd(d, 5) & 0x60, 0x60);   /* THRE | TEMT */
    wr(d, 0, 'h');
    wr(d, 0, 'i');
    char buf[4] = { 0 };
    assert_int_equal(read(p[0], buf, sizeof(buf)), 2);
    assert_string_equal(buf, "hi");
    /* DLAB: offsets 0/1 are the divisor, nothing is transmitted */
    wr(d, 3, 0x80);
    wr(d, 0, 0x01);
    wr(d, 1, 0x00);
    assert_int_equal(rd(d, 0), 0x01);
    wr(d, 3, 0x03);
    assert_int_equal(rd(d, 3), 0x03);
    d->ops->destroy(d);
    close(p[0]);
    close(p[1]);
}

static void test_receive_and_irq(void **state)
{
    (void)state;
    struct sg_vm vm;
    struct sg_device *d = sg_serial_create(0x3f8, 4, -1, NULL);
    d->vm = &vm;
    irq_level = 0;    /* a new UART's line is low; only changes are driven */
    assert_int_equal(rd(d, 2) & 0x0f, 0x01);           /* no interrupt pending */
    assert_int_equal(sg_serial_receive(d, "ab", 2), 2);
    assert_int_equal(rd(d, 5) & 1, 1);                  /* data ready */
    wr(d, 1, 0x01);                                     /* IER: RDI */
    assert_int_equal(rd(d, 2) & 0x0f, 0x04);
    assert_int_equal(irq_level, 0);                     /* OUT2 off: line stays low */
    wr(d, 4, 0x08);                                     /* MCR: OUT2 */
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(d, 0), 'a');
    assert_int_equal(rd(d, 0), 'b');
    assert_int_equal(rd(d, 5) & 1, 0);
    assert_int_equal(irq_level, 0);
    /* THRI is raised when enabled with an empty THR and cleared by reading IIR */
    wr(d, 1, 0x02);
    assert_int_equal(irq_level, 1);
    assert_int_equal(rd(d, 2) & 0x0f, 0x02);
    assert_int_equal(irq_level, 0);
    /* the FIFO holds 64 bytes */
    char many[100];
    memset(many, 'x', sizeof(many));
    assert_int_equal(sg_serial_receive(d, many, sizeof(many)), 64);
    assert_int_equal(sg_serial_rx_room(d), 0);
    d->ops->destroy(d);
}

/* A line left up with no register access for `looks` watchdog calls is
 * dropped and raised again (a lost edge); a guest that reads resets it. */
static void test_watchdog(void **state)
{
    (void)state;
    struct sg_vm vm;
    struct sg_device *d = sg_serial_create(0x3f8, 4, -1, NULL);
    d->vm = &vm;
    irq_level = 0;
    assert_false(sg_serial_watchdog(d, 3));            /* line low: nothing to do */
    wr(d, 4, 0x08);                                     /* OUT2 */
    wr(d, 1, 0x01);                                     /* IER: RDI */
    assert_int_equal(sg_serial_receive(d, "z", 1), 1);
    assert_int_equal(irq_level, 1);
    assert_false(sg_serial_watchdog(d, 3));            /* the guest was just here */
    assert_false(sg_serial_watchdog(d, 3));
    assert_false(sg_serial_watchdog(d, 3));
    int calls = irq_calls;
    assert_true(sg_serial_watchdog(d, 3));             /* three quiet looks: re-raised */
    assert_int_equal(irq_calls, calls + 2);
    assert_int_equal(irq_level, 1);
    rd(d, 5);                                           /* the guest looks at LSR */
    assert_false(sg_serial_watchdog(d, 3));
    assert_false(sg_serial_watchdog(d, 3));
    assert_int_equal(rd(d, 0), 'z');                    /* drained: line low */
    assert_int_equal(irq_level, 0);
    for (int i = 0; i < 10; i++)
        assert_false(sg_serial_watchdog(d, 3));
    d->ops->destroy(d);
}

static void test_save_load(void **state)
{
    (void)state;
    struct sg_vm vm;
    struct sg_device *a = sg_serial_create(0x3f8, 4, -1, NULL);
    struct sg_device *b = sg_serial_create(0x3f8, 4, -1, NULL);
    a->vm = b->vm = &vm;
    wr(a, 3, 0x03);
    wr(a, 7, 0x5a);
    wr(a, 4, 0x08);
    wr(a, 1, 0x01);
    sg_serial_receive(a, "xyz", 3);
    uint8_t blob[SG_DEVICE_STATE_MAX];
    size_t n = a->ops->save(a, blob, sizeof(blob));
    assert_true(n > 0);
    irq_level = -1;
    struct sg_error err = { 0 };
    assert_true(b->ops->load(b, blob, n, &err));
    assert_int_equal(irq_level, 1);            /* the line is re-driven from the state */
    assert_int_equal(rd(b, 7), 0x5a);
    assert_int_equal(rd(b, 0), 'x');
    assert_int_equal(rd(b, 0), 'y');
    /* wrong size or version: refused, device unchanged */
    assert_false(b->ops->load(b, blob, n - 1, &err));
    assert_true(err.set);
    blob[0] ^= 0xff;
    sg_error_clear(&err);
    assert_false(b->ops->load(b, blob, n, &err));
    assert_int_equal(rd(b, 0), 'z');
    a->ops->destroy(a);
    b->ops->destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transmit),
        cmocka_unit_test(test_receive_and_irq),
        cmocka_unit_test(test_save_load),
        cmocka_unit_test(test_watchdog),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
