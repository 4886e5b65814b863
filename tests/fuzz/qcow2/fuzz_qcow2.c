/* fuzz_qcow2: libFuzzer target for qcow2 image open + snapshot list, then a
 * few operations a guest or snapgate-img would do on whatever opened:
 * reads, a write, snapshot create / goto / delete, vmstate read, check.
 * The input is the image file itself (kept in a memfd).  Errors are
 * expected; crashes, leaks and sanitizer reports are bugs. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "block.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("fuzz-qcow2", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    struct sg_error err = {0};
    struct sg_block *bs = sg_block_open(path, "qcow2", 0, &err);
    if (bs) {
        static uint8_t buf[3 * 65536];
        struct sg_snapshot_info *l = NULL;
        int n = sg_block_snapshot_list(bs, &l, &err);
        uint64_t sz = sg_block_size(bs);
        size_t len = sz < sizeof buf ? (size_t)sz : sizeof buf;
        sg_error_clear(&err);
        (void)sg_block_read(bs, 0, buf, len, &err);
        sg_error_clear(&err);
        if (sz > len)
            (void)sg_block_read(bs, sz - len, buf, len, &err);
        sg_error_clear(&err);
        if (n > 0) {
            (void)sg_block_vmstate_read_snapshot(bs, l[0].id, 0, buf,
                                                 l[0].vm_state_size < 4096 ? l[0].vm_state_size
                                                                           : 4096, &err);
            sg_error_clear(&err);
            (void)sg_block_snapshot_goto(bs, l[0].id, &err);
            sg_error_clear(&err);
        }
        memset(buf, 0xa5, 4096);
        if (sz >= 4096)
            (void)sg_block_write(bs, sz / 2 & ~4095ULL, buf, 4096, &err);
        sg_error_clear(&err);
        struct sg_snapshot_info info = {.name = "fuzz"};
        if (sg_block_snapshot_create(bs, &info, &err)) {
            sg_error_clear(&err);
            (void)sg_block_snapshot_delete(bs, info.id, &err);
        }
        sg_error_clear(&err);
        if (n > 0)
            (void)sg_block_snapshot_delete(bs, l[n - 1].id, &err);
        sg_error_clear(&err);
        struct sg_block_check_result r;
        (void)sg_block_check(bs, &r, NULL, &err);
        sg_snapshot_info_free_list(l, n > 0 ? n : 0);
        sg_block_close(bs);
    }
    close(fd);
    return 0;
}
