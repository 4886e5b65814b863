/* vmm_run.c: the run state that QMP reports (QEMU's RunState names) and the
 * guest clock that snapshots record (time the guest actually ran). */
#include <errno.h>
#include <string.h>

#include <jansson.h>

#include "qmp_server.h"
#include "trace.h"
#include "vmm.h"
#include "devices/virtio_blk.h"

uint64_t sg_vmm_vm_clock_ns(const struct sg_vmm *vmm)
{
    uint64_t t = vmm->vm_clock_base_ns;
    if (vmm->run_started_ns)
        t += sg_now_ns() - vmm->run_started_ns;
    return t;
}

void sg_vmm_stop(struct sg_vmm *vmm, bool emit_event)
{
    if (vmm->run_started_ns) {
        sg_vm_pause(&vmm->vm);
        vmm->vm_clock_base_ns += sg_now_ns() - vmm->run_started_ns;
        vmm->run_started_ns = 0;
        if (emit_event && vmm->qmp)
            sg_qmp_server_emit_event(vmm->qmp, "STOP", NULL);
    }
}

void sg_vmm_cont(struct sg_vmm *vmm, bool emit_event)
{
    if (!vmm->run_started_ns && vmm->vm.state != SG_RUN_SHUTDOWN) {
        vmm->prelaunch = false;
        if (vmm->io_error_stopped) {
            /* QEMU retries the requests werror=stop held (the vCPU is parked). */
            vmm->io_error_stopped = false;
            for (int i = 0; i < vmm->vm.nr_drives; i++)
                vmm->vm.drives[i].iostatus = 0;
            pthread_mutex_lock(&vmm->vm.io_lock);
            for (int i = 0; i < vmm->vm.nr_devices; i++)
                sg_virtio_blk_restart(vmm->vm.devices[i]);
            pthread_mutex_unlock(&vmm->vm.io_lock);
        }
        vmm->run_started_ns = sg_now_ns();
        /* As QEMU's vm_prepare_start: RESUME (its timestamp) first, then
         * the vCPUs run; then the event is written, at once: after a lazy
         * load the vCPU's first faults wake the filler thread, and on 2
         * CPUs the event waited 0.5-3.6 ms in the kvm bed for this thread's
         * next poll round.  Written before the vCPUs ran, it kept them
         * parked 0.3-3.3 ms longer (the client woken took the CPU). */
        if (emit_event && vmm->qmp)
            sg_qmp_server_emit_event(vmm->qmp, "RESUME", NULL);
        sg_trace_mark("resume-event");
        sg_vm_resume(&vmm->vm);
        if (emit_event && vmm->qmp)
            sg_qmp_server_flush(vmm->qmp);
    }
}

void sg_vmm_block_io_errors(struct sg_vmm *vmm)
{
    for (int i = 0; i < vmm->vm.nr_drives; i++) {
        struct sg_drive *d = &vmm->vm.drives[i];
        int e = atomic_exchange(&d->io_error, 0);
        if (!e)
            continue;
        bool stop = atomic_load(&d->io_error_stop);
        json_t *ev = json_pack("{s:s, s:s, s:s, s:s, s:b, s:s}", "device", d->device_name,
                               "node-name", d->node_name, "operation",
                               atomic_load(&d->io_error_write) ? "write" : "read", "action",
                               stop ? "stop" : "report", "nospace", e == ENOSPC, "reason",
                               strerror(e));
        if (vmm->qmp)
            sg_qmp_server_emit_event(vmm->qmp, "BLOCK_IO_ERROR", ev);
        else
            json_decref(ev);
        if (stop && vmm->run_started_ns) {
            d->iostatus = e;
            vmm->running = false;
            vmm->io_error_stopped = true;
            sg_vmm_stop(vmm, true);
        }
    }
}

const char *sg_vmm_status(const struct sg_vmm *vmm)
{
    switch (vmm->vm.state) {
    case SG_RUN_SAVE_VM: return "save-vm";
    case SG_RUN_RESTORE_VM: return "restore-vm";
    case SG_RUN_SHUTDOWN: return "shutdown";
    default: break;
    }
    if (vmm->run_started_ns)
        return "running";
    if (vmm->io_error_stopped)
        return "io-error";
    return vmm->prelaunch ? "prelaunch" : "paused";
}
