/* ram_dump.c: QEMU's `pmemsave` QMP command (qapi/misc.json, QEMU 7.2):
 *
 *   pmemsave {"val": GPA, "size": N, "filename": PATH} -> {}
 *
 * Writes guest physical [val, val+size) to PATH (created or truncated,
 * mode 0666 less the umask) as raw bytes.  QEMU 7.2's order and texts:
 * the file is opened first ("Could not open 'PATH': REASON"), then RAM is
 * written ("An IO error has occurred" when a write fails; what was written
 * stays).  QEMU reads any address (unassigned ones as filler bytes) and
 * does not check the size (a negative one overruns its buffer); here the
 * range must be guest RAM on one side of the PCI hole, or the reply is
 * QEMU's memsave text "Invalid addr 0x%016x/size %d specified" (after the
 * open, as memsave does): a dump is therefore bounded by the RAM size.
 *
 * Runs on the main loop, as QEMU's does under its big lock: the monitor
 * waits for it (256 MiB to tmpfs: 0.2-0.4 s measured here at load 7).  The guest may run
 * meanwhile (as in QEMU: a running guest's dump is not one instant).  RAM
 * is copied through a bounce buffer with memcpy, so during a lazy load
 * (ram_lazy.c) a page not filled yet faults as a user access and the filler
 * brings it in first: the dump is the snapshot's content, never the empty
 * page.  Nothing else maps or moves RAM off the main thread, so the
 * mapping stays put for the whole copy. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qmp_server.h"
#include "ram_dump.h"
#include "vmm.h"

#define BOUNCE (1u << 20)

static bool write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void cmd_pmemsave(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    json_int_t val = json_integer_value(json_object_get(args, "val"));
    json_int_t size = json_integer_value(json_object_get(args, "size"));
    const char *filename = json_string_value(json_object_get(args, "filename"));
    int fd = open(filename, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Could not open '%s': %s", filename, strerror(errno));
        return;
    }
    const char *src = NULL;
    if (val >= 0 && size >= 0 && (uint64_t)val + (uint64_t)size >= (uint64_t)val)
        src = size ? sg_vm_gpa(&vmm->vm, (uint64_t)val, (uint64_t)size) : "";
    if (!src) {
        close(fd);
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "Invalid addr 0x%016" PRIx64 "/size %" PRId64 " specified",
                          (uint64_t)val, (int64_t)size);
        return;
    }
    char *buf = size ? malloc(BOUNCE) : NULL;
    if (size && !buf) {
        close(fd);
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "out of memory");
        return;
    }
    bool ok = true;
    for (uint64_t done = 0; ok && done < (uint64_t)size;) {
        size_t n = (uint64_t)size - done < BOUNCE ? (size_t)((uint64_t)size - done) : BOUNCE;
        memcpy(buf, src + done, n);
        ok = write_all(fd, buf, n);
        done += n;
    }
    free(buf);
    if (close(fd) != 0)
        ok = false;
    if (!ok) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "An IO error has occurred");
        return;
    }
    sg_qmp_req_return(req, NULL);
}

static const struct sg_qmp_arg pmemsave_args[] = {
    SG_QMP_ARG("val", SG_QMP_T_INT),
    SG_QMP_ARG("size", SG_QMP_T_INT),
    SG_QMP_ARG("filename", SG_QMP_T_STR),
    SG_QMP_ARGS_END,
};

bool sg_ram_dump_register(struct sg_vmm *vmm, struct sg_error *err)
{
    const struct sg_qmp_command cmds[] = {
        { "pmemsave", cmd_pmemsave, pmemsave_args, 0, vmm },
        { NULL },
    };
    return sg_qmp_server_add_commands(vmm->qmp, cmds, err);
}
