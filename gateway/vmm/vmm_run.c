/* vmm_run.c: the run state that QMP reports (QEMU's RunState names) and the
 * guest clock that snapshots record (time the guest actually ran). */
#include <time.h>

#include <jansson.h>

#include "qmp_server.h"
#include "vmm.h"

uint64_t sg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

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
        vmm->run_started_ns = sg_now_ns();
        sg_vm_resume(&vmm->vm);
        if (emit_event && vmm->qmp)
            sg_qmp_server_emit_event(vmm->qmp, "RESUME", NULL);
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
    return vmm->prelaunch ? "prelaunch" : "paused";
}
