/* acpi_pm.h: the ACPI fixed hardware of a -kernel VM (power management
 * registers PM1a event + control at SG_ACPI_PM_BASE, the fixed power
 * button, the SCI) and the reset lines a
 * PC guest pulls (ACPI reset register = port 0xCF9, keyboard controller). */
#ifndef SG_ACPI_PM_H
#define SG_ACPI_PM_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/device.h"

#define SG_ACPI_PM_BASE 0x600u      /* PM1a_EVT_BLK: status (2), enable (2) */
#define SG_ACPI_PM1_EVT_LEN 4u
#define SG_ACPI_PM1_CNT_OFF 4u      /* PM1a_CNT_BLK at base + 4 */
#define SG_ACPI_PM1_CNT_LEN 2u
#define SG_ACPI_PM_LEN 8u
#define SG_ACPI_SCI_IRQ 9u
#define SG_ACPI_SLP_TYP_S5 5u       /* the DSDT's \_S5 package says this value */
#define SG_ACPI_RESET_PORT 0xcf9u   /* FADT RESET_REG (the PIIX reset control register) */
#define SG_ACPI_RESET_VALUE 0x06u

/* PM1 status and enable: the fixed power button (PWRBTN_STS / PWRBTN_EN). */
#define SG_PM1_PWRBTN 0x0100u

/* PM1 control bits. */
#define SG_PM1_SCI_EN 0x0001u
#define SG_PM1_SLP_TYP_SHIFT 10
#define SG_PM1_SLP_EN 0x2000u

/* The PM1 registers.  Writing SLP_EN with SLP_TYP = S5 powers the VM off
 * (sg_vm_guest_exit); SCI_EN always reads 1 (no SMI_CMD: ACPI mode only). */
struct sg_device *sg_acpi_pm_create(struct sg_error *err);

/* The fixed-feature power button is pressed (QMP system_powerdown): when
 * PWRBTN_EN is set, PWRBTN_STS is set and the SCI raised (QEMU 7.2 leaves
 * the status alone while the event is disabled); the guest clears the
 * status by writing 1 to it.  Callable from any thread.  false:
 * the VM has no acpi-pm device (the demo guest), nothing changed. */
bool sg_acpi_pm_power_button(struct sg_vm *vm);

/* true: this port write asks a PC to reset: the reset control register
 * 0xCF9 with RST_CPU (bit 2) set, or the keyboard controller's pulse of
 * the reset line (0xFE to port 0x64). */
bool sg_reset_port_write(uint16_t port, const void *data, unsigned size);

#endif
