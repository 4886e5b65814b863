/* Snapshot-list fixtures: one per case of INTERFACES.md section 3.  Dates
 * are 2026-11-22 02:56:33 UTC (the tests run with TZ=UTC). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_backend.h"

#define DATE 1795316193   /* 2026-11-22 02:56:33 UTC */
#define VM 461434         /* "451 KiB" */

void fixture(struct fake_vm *vm, const char *name)
{
    struct fake_disk *a, *b;
    if (strcmp(name, "empty") == 0) {
        fake_disk(vm, "drive0", "disk0", "qcow2", false);
    } else if (strcmp(name, "single") == 0) {
        a = fake_disk(vm, "drive0", "disk0", "qcow2", false);
        fake_snap(a, "s1", VM, DATE, false);
        fake_snap(a, "s2", VM, DATE, false);
    } else if (strcmp(name, "dup") == 0) {
        /* qemu-img snapshot -c dup twice: duplicate tags on drive0 */
        a = fake_disk(vm, "drive0", "disk0", "qcow2", false);
        b = fake_disk(vm, "drive1", "disk1", "qcow2", false);
        fake_snap(a, "dup", 0, DATE, true);
        fake_snap(a, "dup", 0, DATE, true);
        fake_snap(a, "x", 0, DATE, true);
        fake_snap(b, "x", 0, DATE, true);
        fake_snap(b, "dup", 0, DATE, true);
    } else if (strcmp(name, "dupvm") == 0) {
        a = fake_disk(vm, "drive0", "disk0", "qcow2", false);
        fake_snap(a, "dup", VM, DATE, false);
        fake_snap(a, "ok", VM, DATE, false);
        fake_snap(a, "dup", VM, DATE, false);
    } else if (strcmp(name, "collide") == 0) {
        /* ID 1 is 'alpha'; the tag "1" belongs to ID 2 */
        a = fake_disk(vm, "drive0", "disk0", "qcow2", false);
        fake_snap(a, "alpha", VM, DATE, false);
        fake_snap(a, "1", VM, DATE, false);
    } else if (strcmp(name, "partial") == 0) {
        a = fake_disk(vm, "drive0", "disk0", "qcow2", false);
        b = fake_disk(vm, "drive1", "disk1", "qcow2", false);
        fake_snap(a, "only0", 0, DATE, true);
        fake_snap(a, "both", 0, DATE, true);
        fake_snap(b, "both", 0, DATE, true);
        fake_snap(b, "only1", 0, DATE, true);
        fake_snap(b, "1", 0, DATE, true);
    } else if (strcmp(name, "idsdiffer") == 0) {
        a = fake_disk(vm, "drive0", "disk0", "qcow2", false);
        b = fake_disk(vm, "drive1", "disk1", "qcow2", false);
        fake_snap(a, "a", VM, DATE, false);
        fake_snap(a, "b", VM, DATE, false);
        fake_snap(b, "b", 0, DATE, false);
        fake_snap(b, "a", 0, DATE, false);
    } else if (strcmp(name, "readonly") == 0) {
        a = fake_disk(vm, "drive0", "disk0", "qcow2", false);
        b = fake_disk(vm, "drive1", "disk1", "qcow2", true);
        fake_snap(a, "s1", VM, DATE, false);
        fake_snap(b, "rosnap", 0, DATE, true);
    } else if (strcmp(name, "rawrw") == 0) {
        a = fake_disk(vm, "drive0", "disk0", "qcow2", false);
        fake_disk(vm, "drive1", "disk1", "raw", false);
        fake_snap(a, "s1", VM, DATE, false);
    } else if (strcmp(name, "rawro") == 0) {
        a = fake_disk(vm, "drive0", "disk0", "qcow2", false);
        fake_disk(vm, "drive1", "disk1", "raw", true);
        fake_snap(a, "s1", VM, DATE, false);
    } else if (strcmp(name, "rawonly") == 0) {
        fake_disk(vm, "drive0", "disk0", "raw", false);
    } else if (strcmp(name, "nodisk") == 0) {
        /* nothing */
    } else if (strcmp(name, "diskonly") == 0) {
        a = fake_disk(vm, "drive0", "disk0", "qcow2", false);
        fake_snap(a, "d", 0, DATE, true);
    } else {
        fprintf(stderr, "no fixture %s\n", name);
        abort();
    }
}
