/* PCI host bridge: mechanism #1 addressing, config-space write rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "devices/pci.h"
#include "vm.h"
#include "vm_io.h"

void sg_vm_set_irq(struct sg_vm *vm, unsigned irq, int level)
{
    (void)vm, (void)irq, (void)level;
}

static uint8_t fn_cfg[SG_PCI_CFG_SIZE];
static const uint32_t fn_bars[6] = { 0x40 };

static uint32_t fn_read(struct sg_device *d, unsigned reg) { (void)d; return sg_pci_cfg_read(fn_cfg, reg); }
static void fn_write(struct sg_device *d, unsigned reg, uint32_t v, uint32_t m)
{
    (void)d;
    sg_pci_cfg_write(fn_cfg, fn_bars, reg, v, m);
}
static const struct sg_device_ops fn_ops = { .type = "test", .cfg_read = fn_read, .cfg_write = fn_write };

static uint32_t cfg_in(struct sg_vm *vm, unsigned slot, unsigned reg, unsigned size)
{
    uint32_t a = 0x80000000u | slot << 11 | (reg & 0xfc), v = 0;
    sg_vm_pio(vm, 0xcf8, true, &a, 4);
    sg_vm_pio(vm, (uint16_t)(0xcfc + (reg & 3)), false, &v, size);
    return v;
}

static void cfg_out(struct sg_vm *vm, unsigned slot, unsigned reg, uint32_t v, unsigned size)
{
    uint32_t a = 0x80000000u | slot << 11 | (reg & 0xfc);
    sg_vm_pio(vm, 0xcf8, true, &a, 4);
    sg_vm_pio(vm, (uint16_t)(0xcfc + (reg & 3)), true, &v, size);
}

static void test_config_space(void **state)
{
    (void)state;
    static struct sg_vm vm;
    memset(&vm, 0, sizeof(vm));
    pthread_mutex_init(&vm.io_lock, NULL);
    struct sg_device *host = sg_pci_host_create(NULL);
    host->vm = &vm;
    vm.devices[vm.nr_devices++] = host;
    struct sg_device fn = { .ops = &fn_ops, .vm = &vm, .pci_slot = 3 };
    vm.devices[vm.nr_devices++] = &fn;
    sg_pci_cfg_init(fn_cfg, 0x1af4, 0x1001, 0x01800000, 0x1af4, 2);

    assert_int_equal(cfg_in(&vm, 0, 0, 4), 0x12378086u);   /* the bridge itself */
    assert_int_equal(cfg_in(&vm, 3, 0, 4), 0x10011af4u);
    assert_int_equal(cfg_in(&vm, 3, 2, 2), 0x1001);         /* sub-dword read */
    assert_int_equal(cfg_in(&vm, 7, 0, 4), 0xffffffffu);    /* empty slot */
    /* vendor/device are read-only; BAR sizing returns the size mask */
    cfg_out(&vm, 3, 0, 0, 4);
    assert_int_equal(cfg_in(&vm, 3, 0, 4), 0x10011af4u);
    cfg_out(&vm, 3, 0x10, 0xffffffffu, 4);
    assert_int_equal(cfg_in(&vm, 3, 0x10, 4) & 0xffff, 0xffc0);
    cfg_out(&vm, 3, 0x10, 0xc041, 4);
    assert_int_equal(cfg_in(&vm, 3, 0x10, 4), 0xc040);
    cfg_out(&vm, 3, 0x04, 0x05, 2);
    assert_int_equal(cfg_in(&vm, 3, 0x04, 2), 0x05);
    cfg_out(&vm, 3, 0x3c, 0x0b, 1);
    assert_int_equal(cfg_in(&vm, 3, 0x3c, 1), 0x0b);
    /* the enable bit of CONFIG_ADDRESS is required */
    uint32_t a = 3u << 11, v = 0;
    sg_vm_pio(&vm, 0xcf8, true, &a, 4);
    sg_vm_pio(&vm, 0xcfc, false, &v, 4);
    assert_int_equal(v, 0xffffffffu);
    host->ops->destroy(host);
}

int main(void)
{
    const struct CMUnitTest tests[] = { cmocka_unit_test(test_config_space) };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
