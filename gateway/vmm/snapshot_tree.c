/* snapshot_tree.c: snapgate's QMP extensions for the snapshot tree and for
 * checking RAM after a load.  QEMU's schemas stay as they are, so these
 * are separate x-snapgate- commands (man snapgate-vmm(1)):
 *
 *   x-snapgate-query-snapshot-tree [vmstate: NODE]
 *     -> {"node", "device", "snapshots": [{"id", "name", "parent"?}],
 *         "current"?}
 *   Every snapshot on the vmstate disk in table order; "parent" is the ID
 *   of the snapshot the VM was last saved as or loaded from when it was
 *   taken (recorded in its VM state header by ID and date, so a reused ID
 *   is not mistaken for it; absent: a root, or its parent was deleted);
 *   "current" the snapshot the VM was last saved as or loaded from, absent
 *   when unknown (a fresh start) or deleted.
 *
 *   x-snapgate-ram-checksum -> {"fnv1a64": "HEX", "size",
 *                               "excluded": [{"what", "cpu-index"?, "gpa", "size"}]}
 *   A hash of all guest RAM, for tests (a load must restore exactly what
 *   was saved), with the paravirtual records KVM itself writes into guest
 *   RAM taken as zeros and listed in "excluded": the wall clock (12 bytes,
 *   MSR_KVM_WALL_CLOCK(_NEW), one per VM), and per vCPU the pvclock record
 *   (32, MSR_KVM_SYSTEM_TIME(_NEW)), the async page fault area (64,
 *   MSR_KVM_ASYNC_PF_EN), the steal time record (64, MSR_KVM_STEAL_TIME)
 *   and the PV EOI word (4, MSR_KVM_PV_EOI_EN), each where the vCPU's
 *   current MSR points (when enabled).  Why: a load sets the saved MSRs
 *   again, as QEMU's loadvm does, and KVM_SET_MSRS of the wall clock MSR
 *   makes KVM write the wall clock at once (version + 2, the host's boot
 *   time as seen from kvmclock now: another value at every load); the
 *   others it rewrites when the vCPU next runs (KVM's code).  Measured with
 *   pmemsave dumps of a stopped 256 MiB Linux guest in the bed (issue 19):
 *   a load changed 4-5 bytes of RAM, all in the wall clock (version 2 -> 6,
 *   both wall clock MSRs being written; seconds, nanoseconds), the same
 *   bytes again between two loads in a row, nothing else; the save changed
 *   nothing.  The ranges come from the MSRs of the VM as it is when asked,
 *   the same at a save and after its load (the load writes the saved MSR
 *   values back).  The demo guest enables none: "excluded" is [].  Runs on
 *   the main loop with a running guest's vCPU parked for the MSR reads and
 *   the hash (no STOP/RESUME); meant for small guests. */
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "qmp_server.h"
#include "ram_dump.h"
#include "snapshot_internal.h"
#include "snapshot_op.h"
#include "vmstate.h"

static struct sg_drive *tree_drive(struct sg_vmm *vmm, json_t *args)
{
    const char *node = json_string_value(json_object_get(args, "vmstate"));
    for (int i = 0; i < vmm->vm.nr_drives; i++) {
        struct sg_drive *d = &vmm->vm.drives[i];
        if (node ? !strcmp(node, d->node_name)
                 : !d->readonly && sg_block_can_snapshot(d->bs))
            return d;
    }
    return NULL;
}

/* ---- the parents, kept so that the query reads no image ----------------
 * A snapshot's parent is in its VM state header, on disk: reading it needs
 * the drive lock, which a running save's writer holds for its writes (a
 * stalled disk: seconds).  So each parent is read once and kept here: at
 * start for the snapshots the images already hold, at each save's commit
 * from what the save wrote (sg_snap_tree_saved), and, should a snapshot
 * with VM state ever be listed without a record, read under the lock then
 * (none is: only saves make such snapshots, and no other program can write
 * the locked images).  Records are keyed by drive, ID and date (an ID can be
 * reused after a delete) and pruned to the drive's published list at each
 * use, so they never outnumber its snapshots. */
struct parent_rec {
    const struct sg_drive *drive;
    char id[sizeof(((struct sg_snapshot_info *)0)->id)];
    uint64_t date_sec;
    uint32_t date_nsec;
    bool has_parent;
    char parent_id[sizeof(((struct sg_vmstate_header *)0)->parent_id)];
    uint64_t parent_date_sec;
    uint32_t parent_date_nsec;
};

struct sg_snap_tree {
    struct parent_rec *r;
    size_t n, cap;
};

static bool rec_is(const struct parent_rec *r, const struct sg_drive *d, const char *id,
                   uint64_t sec, uint32_t nsec)
{
    return r->drive == d && r->date_sec == sec && r->date_nsec == nsec && !strcmp(r->id, id);
}

static struct parent_rec *rec_find(struct sg_snap_tree *t, const struct sg_drive *d,
                                   const struct sg_snapshot_info *s)
{
    for (size_t i = 0; i < t->n; i++)
        if (rec_is(&t->r[i], d, s->id, s->date_sec, s->date_nsec))
            return &t->r[i];
    return NULL;
}

/* A new record for snapshot `s` of `d` (no parent yet); NULL: out of memory. */
static struct parent_rec *rec_add(struct sg_snap_tree *t, const struct sg_drive *d,
                                  const char *id, uint64_t sec, uint32_t nsec)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        struct parent_rec *r = realloc(t->r, cap * sizeof(*r));
        if (!r)
            return NULL;
        t->r = r;
        t->cap = cap;
    }
    struct parent_rec *r = &t->r[t->n++];
    memset(r, 0, sizeof(*r));
    r->drive = d;
    snprintf(r->id, sizeof(r->id), "%s", id);
    r->date_sec = sec;
    r->date_nsec = nsec;
    return r;
}

/* Drops the records of `d` that its list no longer holds. */
static void rec_prune(struct sg_snap_tree *t, const struct sg_drive *d,
                      const struct sg_snapshot_info *list, int n)
{
    size_t k = 0;
    for (size_t i = 0; i < t->n; i++) {
        bool keep = t->r[i].drive != d;
        for (int s = 0; !keep && s < n; s++)
            keep = rec_is(&t->r[i], d, list[s].id, list[s].date_sec, list[s].date_nsec);
        if (keep)
            t->r[k++] = t->r[i];
    }
    t->n = k;
}

/* Reads, under the drive lock, the parent of each snapshot of `list` that
 * has VM state and no record yet (at start; see above). */
static void rec_read_missing(struct sg_snap_tree *t, struct sg_drive *d,
                             const struct sg_snapshot_info *list, int n)
{
    bool locked = false;
    for (int s = 0; s < n; s++) {
        if (!list[s].vm_state_size || rec_find(t, d, &list[s]))
            continue;
        struct parent_rec *r = rec_add(t, d, list[s].id, list[s].date_sec, list[s].date_nsec);
        if (!r)
            break;
        if (!locked)
            sg_drive_lock(d);
        locked = true;
        uint8_t page[SG_VMSTATE_HEADER_SIZE];
        struct sg_vmstate_header h;
        struct sg_error err = { 0 };
        if (!sg_block_vmstate_read_snapshot(d->bs, list[s].id, 0, page, sizeof(page), &err) ||
            !sg_vmstate_header_decode(page, &h, list[s].name, &err) || !h.has_parent)
            continue;   /* no parent known */
        r->has_parent = true;
        memcpy(r->parent_id, h.parent_id, sizeof(r->parent_id));
        r->parent_id[sizeof(r->parent_id) - 1] = 0;
        r->parent_date_sec = h.parent_date_sec;
        r->parent_date_nsec = h.parent_date_nsec;
    }
    if (locked)
        sg_drive_unlock(d);
}

void sg_snap_tree_saved(struct sg_vmm *vmm, const struct sg_drive *d, const char *id,
                        uint64_t date_sec, uint32_t date_nsec, const struct sg_snap_pos *parent)
{
    struct sg_snap_tree *t = vmm->tree;
    struct sg_snapshot_info *list = NULL;
    int n = sg_block_snapshot_list_published(d->bs, &list, NULL);
    if (!t || n < 0)
        return;
    rec_prune(t, d, list, n);
    sg_snapshot_info_free_list(list, n);
    struct sg_snapshot_info me = { .date_sec = date_sec, .date_nsec = date_nsec };
    snprintf(me.id, sizeof(me.id), "%s", id);
    struct parent_rec *r = rec_find(t, d, &me);
    if (!r && !(r = rec_add(t, d, id, date_sec, date_nsec)))
        return;
    /* What save_header wrote into this snapshot's header. */
    r->has_parent = parent->valid;
    snprintf(r->parent_id, sizeof(r->parent_id), "%s", parent->valid ? parent->id : "");
    r->parent_date_sec = parent->valid ? parent->date_sec : 0;
    r->parent_date_nsec = parent->valid ? parent->date_nsec : 0;
}

void sg_snap_tree_free(struct sg_vmm *vmm)
{
    if (!vmm->tree)
        return;
    free(vmm->tree->r);
    free(vmm->tree);
    vmm->tree = NULL;
}

/* The parent of list[s] as an index into list, -1: none known. */
static int parent_of(struct sg_snap_tree *t, const struct sg_drive *d,
                     const struct sg_snapshot_info *list, int n, int s)
{
    const struct parent_rec *r = list[s].vm_state_size ? rec_find(t, d, &list[s]) : NULL;
    if (!r || !r->has_parent)
        return -1;
    for (int i = 0; i < n; i++)
        if (i != s && !strcmp(list[i].id, r->parent_id) && list[i].date_sec == r->parent_date_sec &&
            list[i].date_nsec == r->parent_date_nsec)
            return i;
    return -1;
}

/* The snapshot list as the block layer published it at its last change, no
 * drive lock (as query-block's): the query answers while a save holds the
 * disk. */
static void cmd_tree(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_drive *d = tree_drive(vmm, args);
    if (!d || !sg_block_can_snapshot(d->bs)) {
        sg_qmp_req_errorf(req, SG_ERR_GENERIC, "no block device can store vmstate for snapshot");
        return;
    }
    struct sg_error err = { 0 };
    struct sg_snapshot_info *list = NULL;
    int n = sg_block_snapshot_list_published(d->bs, &list, &err);
    if (n < 0) {
        sg_qmp_req_error(req, &err);
        return;
    }
    rec_prune(vmm->tree, d, list, n);
    rec_read_missing(vmm->tree, d, list, n);
    json_t *snaps = json_array();
    const struct sg_snap_pos *pos = &vmm->vm.pos;
    const char *current = NULL;
    for (int i = 0; i < n; i++) {
        json_t *o = json_pack("{s:s, s:s}", "id", list[i].id, "name", list[i].name);
        int p = parent_of(vmm->tree, d, list, n, i);
        if (o && p >= 0)
            json_object_set_new(o, "parent", json_string(list[p].id));
        json_array_append_new(snaps, o);
        if (pos->valid && !strcmp(pos->node, d->node_name) && !strcmp(pos->id, list[i].id) &&
            pos->date_sec == list[i].date_sec && pos->date_nsec == list[i].date_nsec)
            current = list[i].id;
    }
    json_t *ret = json_pack("{s:s, s:s, s:o}", "node", d->node_name, "device", d->device_name,
                            "snapshots", snaps);
    if (ret && current)
        json_object_set_new(ret, "current", json_string(current));
    sg_snapshot_info_free_list(list, n);
    sg_qmp_req_return(req, ret);
}

/* ---- x-snapgate-ram-checksum ---------------------------------------------
 * The paravirtual records KVM itself writes into guest RAM, found from the
 * vCPUs' MSRs (KVM's Documentation/virt/kvm/x86/msr.rst; the guest enables
 * each by writing its GPA, bit 0 "enabled" where there is one). */
enum { MAX_EXCL = 8 * SG_VM_MAX_VCPUS };

struct excl {
    const char *what;
    int cpu;               /* -1: one for the VM (the wall clock) */
    uint64_t gpa, size;
    uint64_t idx;          /* RAM index */
};

static bool read_msr(int fd, uint32_t index, uint64_t *v)
{
    struct { struct kvm_msrs m; struct kvm_msr_entry e; } one;
    memset(&one, 0, sizeof(one));
    one.m.nmsrs = 1;
    one.e.index = index;
    if (ioctl(fd, KVM_GET_MSRS, &one) != 1)
        return false;   /* absent on this host, or not this guest's */
    *v = one.e.data;
    return true;
}

/* The records the vCPUs' current MSRs point at, each once, in RAM. */
static int pv_records(struct sg_vm *vm, struct excl *out)
{
    int n = 0;
    for (int c = 0; c < vm->nr_vcpus; c++) {
        for (size_t k = 0; k < sg_nr_pv_msrs; k++) {
            const struct sg_pv_msr *pm = &sg_pv_msrs[k];
            uint64_t v, gpa;
            if (!read_msr(vm->vcpus[c].fd, pm->index, &v) || !sg_pv_msr_gpa(pm, v, &gpa))
                continue;
            const char *host = sg_vm_gpa(vm, gpa, pm->size);
            if (!host)
                continue;   /* not RAM: KVM cannot write it there either */
            int cpu = strcmp(pm->what, "kvm-wall-clock") ? c : -1;
            bool dup = false;
            for (int i = 0; i < n && !dup; i++)
                dup = out[i].gpa == gpa && out[i].cpu == cpu && !strcmp(out[i].what, pm->what);
            if (dup || n == MAX_EXCL)
                continue;
            out[n++] = (struct excl){ pm->what, cpu, gpa, pm->size,
                                      (uint64_t)(host - (const char *)vm->ram) };
        }
    }
    return n;
}

/* FNV-1a over RAM as 64-bit words, the bytes of `ex` taken as zeros. */
static uint64_t ram_fnv(const struct sg_vm *vm, const struct excl *ex, int nex)
{
    enum { PAGE = 4096 };
    uint64_t h = 0xcbf29ce484222325ull, page[PAGE / 8];
    for (uint64_t off = 0; off < vm->ram_size; off += PAGE) {
        uint64_t len = vm->ram_size - off < PAGE ? vm->ram_size - off : PAGE;
        const uint64_t *p = (const uint64_t *)((const char *)vm->ram + off);
        for (int i = 0; i < nex; i++) {
            uint64_t a = ex[i].idx, b = ex[i].idx + ex[i].size;
            if (b <= off || a >= off + len)
                continue;
            if (p != page) {
                memcpy(page, p, len);
                p = page;
            }
            uint64_t from = a > off ? a - off : 0, to = b < off + len ? b - off : len;
            memset((char *)page + from, 0, to - from);
        }
        for (uint64_t i = 0; i < len / 8; i++) {
            h ^= p[i];
            h *= 0x100000001b3ull;
        }
    }
    return h;
}

static void cmd_ram_checksum(struct sg_qmp_req *req, json_t *args, void *opaque)
{
    struct sg_vmm *vmm = opaque;
    struct sg_vm *vm = &vmm->vm;
    (void)args;
    /* A vCPU's MSRs can be read only while it is out of KVM_RUN: park a
     * running guest for the reading and the hash (no STOP/RESUME: the
     * run state does not change). */
    bool park = vmm->run_started_ns && !vm->pause_req;
    if (park)
        sg_vm_pause(vm);
    struct excl ex[MAX_EXCL] = { 0 };
    int nex = pv_records(vm, ex);
    uint64_t h = ram_fnv(vm, ex, nex);
    if (park)
        sg_vm_resume(vm);
    json_t *list = json_array();
    for (int i = 0; i < nex; i++) {
        json_t *o = json_pack("{s:s, s:I, s:I}", "what", ex[i].what, "gpa", (json_int_t)ex[i].gpa,
                              "size", (json_int_t)ex[i].size);
        if (o && ex[i].cpu >= 0)
            json_object_set_new(o, "cpu-index", json_integer(ex[i].cpu));
        json_array_append_new(list, o);
    }
    char hex[20];
    snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)h);
    sg_qmp_req_return(req, json_pack("{s:s, s:I, s:o}", "fnv1a64", hex, "size",
                                     (json_int_t)vm->ram_size, "excluded", list));
}

static const struct sg_qmp_arg tree_args[] = {
    { "vmstate", SG_QMP_T_STR, .optional = true },
    { NULL },
};

bool sg_snap_tree_register(struct sg_vmm *vmm, struct sg_error *err)
{
    if (!vmm->tree && !(vmm->tree = calloc(1, sizeof(*vmm->tree)))) {
        sg_error_set(err, "out of memory");
        return false;
    }
    /* The parents of the snapshots the images hold (before any job runs). */
    for (int i = 0; i < vmm->vm.nr_drives; i++) {
        struct sg_drive *d = &vmm->vm.drives[i];
        struct sg_snapshot_info *list = NULL;
        int n = d->bs && sg_block_can_snapshot(d->bs)
                    ? sg_block_snapshot_list_published(d->bs, &list, NULL) : -1;
        if (n > 0)
            rec_read_missing(vmm->tree, d, list, n);
        sg_snapshot_info_free_list(list, n);
    }
    const struct sg_qmp_command cmds[] = {
        { "x-snapgate-query-snapshot-tree", cmd_tree, tree_args, 0, vmm },
        { "x-snapgate-ram-checksum", cmd_ram_checksum, NULL, 0, vmm },
        { NULL },
    };
    return sg_qmp_server_add_commands(vmm->qmp, cmds, err) && sg_ram_dump_register(vmm, err);
}
