/* main.c: snapgate-vmm — set-up, then one poll() loop on the main thread
 * serving QMP, the serial console input, vCPU notifications, signals and
 * the job engine; the vCPU runs on its own thread (kvm/vcpu.c). */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "devices/acpi_pm.h"
#include "devices/rtc.h"
#include "devices/pci.h"
#include "devices/serial.h"
#include "devices/virtio_blk.h"
#include "jobs.h"
#include "linux_boot.h"
#ifdef SG_VMM_HAVE_HMP
#include "hmp_link.h"
#endif
#include "qmp_server.h"
#include "qmp_unix.h"
#include "vmm.h"
#include "vmstate.h"

static const unsigned pci_irqs[] = { 10, 11, 5, 9 };

static int unix_socket(const char *path, bool listen_, struct sg_error *err)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof(sa.sun_path)) {
        sg_error_set(err, "%s: socket path too long", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        sg_error_set_errno(err, errno, "%s", path);
        return -1;
    }
    if (listen_) {
        /* The shared helper: replaces only a stale socket, never a file. */
        close(fd);
        return sg_unix_listen(path, 1, true, err);
    } else if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        sg_error_set_errno(err, errno, "%s", path);
        close(fd);
        return -1;
    }
    return fd;
}

/* -serial: where the guest's COM1 output goes and input comes from. */
static bool setup_serial(struct sg_vmm *vmm, struct sg_error *err)
{
    const char *s = vmm->opts.serial;
    vmm->serial_listen_fd = vmm->serial_conn_fd = vmm->serial_in_fd = -1;
    vmm->vm.serial_out_fd = -1;
    if (!strcmp(s, "stdio")) {
        vmm->vm.serial_out_fd = STDOUT_FILENO;
        vmm->serial_in_fd = STDIN_FILENO;
        /* A reader that stops reading must not wedge the vCPU (and with it
         * every pause): the console drops output instead. */
        struct stat st;
        if (fstat(STDOUT_FILENO, &st) == 0 && !S_ISREG(st.st_mode))
            fcntl(STDOUT_FILENO, F_SETFL, fcntl(STDOUT_FILENO, F_GETFL) | O_NONBLOCK);
    } else if (!strncmp(s, "file:", 5)) {
        int fd = open(s + 5, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0) {
            sg_error_set_errno(err, errno, "-serial %s", s);
            return false;
        }
        vmm->vm.serial_out_fd = fd;
    } else if (!strncmp(s, "unix:", 5)) {
        char path[512];
        snprintf(path, sizeof(path), "%s", s + 5);
        char *comma = strchr(path, ',');
        bool server = comma && strstr(comma, "server=on");
        if (comma)
            *comma = 0;
        if (server) {
            vmm->serial_listen_fd = unix_socket(path, true, err);
            if (vmm->serial_listen_fd < 0)
                return false;
        } else {
            int fd = unix_socket(path, false, err);
            if (fd < 0)
                return false;
            fcntl(fd, F_SETFL, O_NONBLOCK);
            vmm->serial_conn_fd = vmm->serial_in_fd = fd;
            vmm->vm.serial_out_fd = fd;
        }
    }
    return true;
}

static bool open_drives(struct sg_vmm *vmm, struct sg_error *err)
{
    struct sg_vm *vm = &vmm->vm;
    for (int i = 0; i < vmm->opts.nr_drives; i++) {
        const struct sg_drive_opt *o = &vmm->opts.drives[i];
        struct sg_drive *d = &vm->drives[i];
        sem_init(&d->lock, 0, 1);
        snprintf(d->file, sizeof(d->file), "%s", o->file);
        snprintf(d->format, sizeof(d->format), "%s", o->format);
        if (o->node_name[0])
            snprintf(d->node_name, sizeof(d->node_name), "%s", o->node_name);
        else
            snprintf(d->node_name, sizeof(d->node_name), "disk%d", i);
        snprintf(d->device_name, sizeof(d->device_name), "drive%d", i);
        for (int j = 0; j < i; j++) {
            if (!strcmp(vm->drives[j].node_name, d->node_name)) {
                sg_error_set(err, "Duplicate nodes with node-name='%s'", d->node_name);
                return false;
            }
        }
        d->readonly = o->readonly;
        d->bs = sg_block_open(o->file, o->format[0] ? o->format : NULL,
                              o->readonly ? SG_BLOCK_RDONLY : 0, err);
        if (!d->bs)
            return false;
        vm->nr_drives = i + 1;
        sg_snap_drop_area(vmm, d, NULL);   /* left by a VMM that was killed */
    }
    return true;
}

static bool build_machine(struct sg_vmm *vmm, struct sg_error *err)
{
    struct sg_vm *vm = &vmm->vm;
    struct sg_device *dev;
    if (!(dev = sg_pci_host_create(err)) || !sg_vm_add_device(vm, dev, err))
        return false;
    if (!(dev = sg_serial_create(0x3f8, 4, vm->serial_out_fd, err)) || !sg_vm_add_device(vm, dev, err))
        return false;
    vm->serial = dev;
    /* Linux: the ACPI power-management registers (power-off), with the other
     * board devices before the disks' (the configuration check on load then
     * still names a missing disk as missing). */
    if (vm->kernel[0] && (!(dev = sg_acpi_pm_create(err)) || !sg_vm_add_device(vm, dev, err)))
        return false;
    if (vm->kernel[0]) {
        if (!(dev = sg_rtc_create(8, err)) || !sg_vm_add_device(vm, dev, err))
            return false;
        vm->rtc = dev;
    }
    for (int i = 0; i < vm->nr_drives; i++) {
        /* Linux finds its lines in the MP table and the DSDT's _PRT (one GSI
         * per slot); the demo guest keeps the ISA lines it has always had. */
        unsigned irq = vm->kernel[0] ? SG_LINUX_PCI_GSI_BASE + (unsigned)i
                                     : pci_irqs[i % (sizeof(pci_irqs) / sizeof(pci_irqs[0]))];
        if (!(dev = sg_virtio_blk_create(&vm->drives[i], 1u + (unsigned)i, (unsigned)i, irq, err)) ||
            !sg_vm_add_device(vm, dev, err))
            return false;
    }
    if (!(vm->kernel[0] ? sg_linux_load(vm, err) : sg_vm_load_demo_guest(vm, err)))
        return false;
    for (int i = 0; i < vm->nr_vcpus; i++)
        if (!sg_vcpu_init(vm, &vm->vcpus[i], i, err))
            return false;
    if (vm->kernel[0] && !sg_vmstate_capture(vm, &vm->poweron_state, &vm->poweron_len, err))
        return false;
    return true;
}

/* Reads what the user typed and hands as much as the UART's FIFO takes. */
static void serial_input(struct sg_vmm *vmm, int fd)
{
    struct sg_vm *vm = &vmm->vm;
    pthread_mutex_lock(&vm->io_lock);
    size_t room = sg_serial_rx_room(vm->serial);
    pthread_mutex_unlock(&vm->io_lock);
    if (room == 0)
        return;
    char buf[64];
    ssize_t n = read(fd, buf, room < sizeof(buf) ? room : sizeof(buf));
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            if (fd == vmm->serial_conn_fd) {
                close(fd);
                if (vm->serial_out_fd == fd)
                    vm->serial_out_fd = -1;
                vmm->serial_conn_fd = -1;
            }
            vmm->serial_in_fd = -1;   /* EOF on stdin: stop watching it */
        }
        return;
    }
    pthread_mutex_lock(&vm->io_lock);
    sg_serial_receive(vm->serial, buf, (size_t)n);
    pthread_mutex_unlock(&vm->io_lock);
}

/* A guest's power-off, reset or fatal error, as QEMU reports them.  While a
 * snapshot job runs the VM stays stopped and this waits for the job to
 * conclude (a live save completes, a lazy load fills RAM before a reset
 * wipes it); run_loop calls it again every round. */
static void guest_exit(struct sg_vmm *vmm)
{
    if (!atomic_load(&vmm->vm.guest_exit))
        return;
    if (sg_job_active(vmm)) {
        sg_vmm_stop(vmm, false);   /* the vCPU parked itself; keep it so */
        return;
    }
    int kind = atomic_exchange(&vmm->vm.guest_exit, 0);
    if (kind == SG_GUEST_EXIT_RESET) {
        /* ACPI reset register, keyboard controller or triple fault: a PC
         * resets, and -kernel is loaded again. */
        struct sg_error err = { 0 };
        sg_vmm_stop(vmm, false);
        if (sg_vm_reset(&vmm->vm, &err)) {
            json_t *d = json_pack("{s:b, s:s}", "guest", 1, "reason", "guest-reset");
            sg_qmp_server_emit_event(vmm->qmp, "RESET", d);
            sg_vmm_cont(vmm, false);
            return;
        }
        fprintf(stderr, "snapgate-vmm: reset failed: %s\n", err.msg);
    }
    if (kind == SG_GUEST_EXIT_FAULT)
        fprintf(stderr, "snapgate-vmm: guest stopped on a fatal error (code %#x)\n",
                vmm->vm.guest_exit_code);
    sg_vmm_stop(vmm, false);
    vmm->vm.state = SG_RUN_SHUTDOWN;
    json_t *d = json_pack("{s:b, s:s}", "guest", 1,
                          "reason", kind == SG_GUEST_EXIT_POWEROFF ? "guest-shutdown" : "guest-panic");
    sg_qmp_server_emit_event(vmm->qmp, "SHUTDOWN", d);
    vmm->quit = true;
    vmm->exit_code = kind == SG_GUEST_EXIT_POWEROFF ? 0 : 1;
}

static void guest_notification(struct sg_vmm *vmm)
{
    char buf[16];
    while (read(vmm->vm.notify_rd, buf, sizeof(buf)) > 0)
        ;
    sg_vmm_block_io_errors(vmm);
    guest_exit(vmm);
}

static int run_loop(struct sg_vmm *vmm, int sig_fd)
{
    uint64_t last_look = 0;
    while (!vmm->quit) {
        int job_timeout = sg_vmm_jobs_step(vmm);
        uint64_t now = sg_now_ns();
        /* every 0.1 s while the guest runs: a line up 0.5 s untouched is re-raised */
        if (vmm->vm.serial && vmm->running && vmm->vm.state == SG_RUN_NORMAL &&
            now - last_look >= 100000000u) {
            last_look = now;
            pthread_mutex_lock(&vmm->vm.io_lock);
            sg_serial_watchdog(vmm->vm.serial, 5);
            if (vmm->vm.rtc)
                sg_rtc_tick(vmm->vm.rtc);
            pthread_mutex_unlock(&vmm->vm.io_lock);
        }
        guest_exit(vmm);   /* one held while a job ran */
        if (vmm->quit)
            break;
#ifdef SG_VMM_HAVE_HMP
        sg_hmp_link_tick(vmm);
        if (job_timeout < 0 && sg_hmp_link_busy(vmm))
            job_timeout = 20;
#endif
        size_t nq = vmm->qmp ? sg_qmp_server_npollfds(vmm->qmp) : 0;
        struct pollfd fds[8 + nq];
        size_t n = 0;
        fds[n++] = (struct pollfd){ .fd = sig_fd, .events = POLLIN };
        fds[n++] = (struct pollfd){ .fd = vmm->vm.notify_rd, .events = POLLIN };
        int in_idx = -1, listen_idx = -1;
        if (vmm->serial_in_fd >= 0) {
            in_idx = (int)n;
            fds[n++] = (struct pollfd){ .fd = vmm->serial_in_fd, .events = POLLIN };
        }
        if (vmm->serial_listen_fd >= 0) {
            listen_idx = (int)n;
            fds[n++] = (struct pollfd){ .fd = vmm->serial_listen_fd, .events = POLLIN };
        }
        size_t qbase = n;
        if (vmm->qmp)
            n += sg_qmp_server_pollfds(vmm->qmp, fds + n, nq);
        /* The UART FIFO fills faster than a guest that polls drains it:
         * retry serial input periodically instead of spinning. */
        int timeout = job_timeout >= 0 ? job_timeout : 50;
        int r = poll(fds, n, timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "snapgate-vmm: poll: %s\n", strerror(errno));
            return 1;
        }
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            if (read(sig_fd, &si, sizeof(si)) == sizeof(si)) {
                sg_vmm_stop(vmm, false);
                vmm->vm.state = SG_RUN_SHUTDOWN;
                json_t *d = json_pack("{s:b, s:s}", "guest", 0, "reason", "host-signal");
                sg_qmp_server_emit_event(vmm->qmp, "SHUTDOWN", d);
                vmm->quit = true;
            }
        }
        if (fds[1].revents & POLLIN)
            guest_notification(vmm);
        if (in_idx >= 0 && (fds[in_idx].revents & (POLLIN | POLLHUP | POLLERR)))
            serial_input(vmm, fds[in_idx].fd);
        if (listen_idx >= 0 && (fds[listen_idx].revents & POLLIN)) {
            int c = accept4(vmm->serial_listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
            if (c >= 0) {
                pthread_mutex_lock(&vmm->vm.io_lock);
                if (vmm->serial_conn_fd >= 0)
                    close(vmm->serial_conn_fd);
                vmm->serial_conn_fd = vmm->serial_in_fd = c;
                vmm->vm.serial_out_fd = c;
                sg_serial_set_out_fd(vmm->vm.serial, c);
                pthread_mutex_unlock(&vmm->vm.io_lock);
            }
        }
        if (vmm->qmp)
            sg_qmp_server_handle_pollfds(vmm->qmp, fds + qbase, n - qbase);
    }
    return vmm->exit_code;
}

/* -daemonize: fork before KVM is touched (a VM belongs to the process that
 * created it) and report set-up success or the error line through a pipe. */
static int daemonize_start(int *report_fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        fprintf(stderr, "snapgate-vmm: pipe: %s\n", strerror(errno));
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "snapgate-vmm: fork: %s\n", strerror(errno));
        return 1;
    }
    if (pid > 0) {
        close(p[1]);
        char msg[1200];
        ssize_t n, total = 0;
        while ((n = read(p[0], msg + total, sizeof(msg) - 1 - (size_t)total)) > 0)
            total += n;
        msg[total > 0 ? total : 0] = 0;
        if (total > 0 && msg[0] == 'O')
            _exit(0);
        fprintf(stderr, "%s", total > 1 ? msg + 1 : "snapgate-vmm: daemon failed to start\n");
        _exit(1);
    }
    close(p[0]);
    setsid();
    *report_fd = p[1];
    return -1;
}

static void daemonize_report(int fd, bool ok, const char *msg)
{
    if (fd < 0)
        return;
    char buf[1200];
    int n = snprintf(buf, sizeof(buf), "%c%s", ok ? 'O' : 'E', msg ? msg : "");
    ssize_t w = write(fd, buf, (size_t)n);
    (void)w;
    close(fd);
    if (ok) {
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, STDIN_FILENO);
            dup2(nul, STDOUT_FILENO);
            dup2(nul, STDERR_FILENO);
            if (nul > 2)
                close(nul);
        }
    }
}

/* Releases whatever set-up got to (every step tolerates "not done"). */
static void teardown(struct sg_vmm *vmm)
{
    struct sg_vm *vm = &vmm->vm;
    sg_vm_stop_vcpus(vm);
    sg_vmm_jobs_free(vmm);
    sg_snap_tree_free(vmm);
#ifdef SG_VMM_HAVE_HMP
    sg_hmp_link_free(vmm);
#endif
    if (vmm->qmp)
        sg_qmp_server_free(vmm->qmp);
    for (int i = 0; i < vm->nr_drives; i++) {
        sg_snap_drop_area(vmm, &vm->drives[i], NULL);   /* the base dies with us */
        sg_drive_lock(&vm->drives[i]);
        if (vm->drives[i].bs) {
            if (!vm->drives[i].readonly)
                sg_block_flush(vm->drives[i].bs, NULL);
            sg_block_close(vm->drives[i].bs);
        }
        sg_drive_unlock(&vm->drives[i]);
    }
    sg_vm_destroy(vm);
    if (vmm->opts.pidfile[0] && vmm->wrote_pidfile)
        unlink(vmm->opts.pidfile);
    free(vmm);
}

static int fail(int report_fd, const char *msg)
{
    char line[1200];
    snprintf(line, sizeof(line), "snapgate-vmm: %s\n", msg);
    if (report_fd >= 0)
        daemonize_report(report_fd, false, line);
    else
        fputs(line, stderr);
    return 1;
}

static const char usage_text[] =
    "Usage: snapgate-vmm [-m SIZE] [-smp 1] [-name NAME]\n"
    "                    [-kernel BZIMAGE [-initrd FILE] [-append CMDLINE]]\n"
    "                    [-drive file=PATH[,format=qcow2|raw][,node-name=NAME][,readonly=on]]...\n"
    "                    [-qmp unix:PATH[,server=on][,wait=off]]\n"
    "                    [-serial stdio|none|file:PATH|unix:PATH[,server=on]]\n"
    "                    [-append dirty=SIZE] [-S] [-loadvm TAG] [-daemonize -pidfile FILE]\n"
    "\n"
    "The bundled KVM VMM of snapgate: runs the built-in demo guest with virtio-blk disks\n"
    "kept in qcow2 images and serves QMP with snapshot jobs (snapshot-save/load/delete).\n"
    "\n"
    "  -m SIZE          guest RAM (default 256M; 16M to 16G)\n"
    "  -drive ...       one virtio-blk disk per option, in order: node names disk0, disk1, ...\n"
    "                   and devices drive0, drive1, ... unless node-name= is given\n"
    "  -qmp unix:PATH   QMP server socket\n"
    "  -serial ...      where the guest's UART goes (default stdio)\n"
    "  -append dirty=SIZE  the demo guest fills SIZE of RAM with a checked pattern\n"
    "  -kernel BZIMAGE  boot Linux instead (-initrd FILE, -append: its command line)\n"
    "  -S               start paused ('cont' runs)\n"
    "  -loadvm TAG      start from a VM snapshot\n"
    "  -daemonize -pidfile FILE  run in the background\n"
    "  -h, -help, -version\n"
    "\n"
    "Needs /dev/kvm.  Unknown options are an error (exit 1).  See snapgate-vmm(1).\n";

/* A snapshot job's buffers (a load's cluster map and read buffer, the RAM
 * hashes: 0.1-2 MiB) come from the heap, not from an mmap each, and stay
 * there when freed: an mmap or munmap while a vCPU runs waits for the other
 * threads' TLBs (1-3 ms each in the kvm bed), and glibc's default (mmap at
 * 128 KiB until a first free raises the threshold) put two of them into the
 * first load after boot.  Guest RAM is mmapped directly, not through here. */
static void tune_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 32 << 20);
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
}

/* ...and the heap those buffers will come from is touched once, the VM
 * set up and its vCPUs not yet started: a load needs about 17 bytes per
 * 64 KiB cluster and a 1 MiB read buffer, and their first touch was 117
 * page faults in the first load's preparation (1 GiB guest). */
static void warm_heap(uint64_t ram_size)
{
    uint64_t n = (2u << 20) + ram_size / 2048;
    if (n > (24u << 20))
        n = 24u << 20;
    char *p = malloc((size_t)n);
    if (p) {
        memset(p, 0, (size_t)n);
        __asm__ volatile("" : : "r"(p) : "memory");   /* not optimised away */
        free(p);
    }
}

int main(int argc, char **argv)
{
    struct sg_vmm *vmm = calloc(1, sizeof(*vmm));
    struct sg_error err = { 0 };
    if (!vmm) {
        fputs("snapgate-vmm: out of memory\n", stderr);
        return 1;
    }
    if (!sg_vmm_parse_args(argc, argv, &vmm->opts, &err)) {
        free(vmm);
        return fail(-1, err.msg);
    }
    if (vmm->opts.help || vmm->opts.version) {
        fputs(vmm->opts.help ? usage_text : "snapgate-vmm " SG_VMM_VERSION "\n", stdout);
        free(vmm);
        return 0;
    }

    /* Refused up front rather than a VM that seems to hang for hours. */
    char pvm_msg[400];
    if (vmm->opts.kernel[0] && !getenv("SNAPGATE_VMM_ALLOW_PVM") &&
        sg_linux_host_is_pvm(pvm_msg, sizeof(pvm_msg))) {
        free(vmm);
        return fail(-1, pvm_msg);
    }

    int report_fd = -1;
    if (vmm->opts.daemonize) {
        int r = daemonize_start(&report_fd);
        if (r >= 0)
            return r;
    }
    signal(SIGPIPE, SIG_IGN);
    tune_malloc();

    struct sg_vm *vm = &vmm->vm;
    vm->ram_size = vmm->opts.ram_size;
    vm->nr_vcpus = vmm->opts.smp;
    vm->guest_kind = vmm->opts.kernel[0] ? "linux" : "snapgate-demo";
    snprintf(vm->kernel, sizeof(vm->kernel), "%s", vmm->opts.kernel);
    snprintf(vm->initrd, sizeof(vm->initrd), "%s", vmm->opts.initrd);
    vm->kvm_fd = vm->vm_fd = -1;
    for (int i = 0; i < SG_VM_MAX_VCPUS; i++)
        vm->vcpus[i].fd = -1;
    snprintf(vm->name, sizeof(vm->name), "%s", vmm->opts.name);
    snprintf(vm->cmdline, sizeof(vm->cmdline), "%s", vmm->opts.append);
    pthread_mutex_init(&vm->io_lock, NULL);
    pthread_mutex_init(&vm->run_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);   /* idle sleeps use deadlines */
    pthread_cond_init(&vm->run_cond, &ca);
    pthread_condattr_destroy(&ca);
    int np[2];
    if (pipe2(np, O_CLOEXEC | O_NONBLOCK) < 0)
        {
        free(vmm);
        return fail(report_fd, "pipe failed");
    }
    vm->notify_rd = np[0];
    vm->notify_wr = np[1];

    /* Signals arrive through a signalfd; every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    int sig_fd = signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK);

    if (!sg_vm_init(vm, &err) || !open_drives(vmm, &err) || !setup_serial(vmm, &err) ||
        !build_machine(vmm, &err) || !sg_vmm_qmp_init(vmm, &err) || !sg_vmm_jobs_init(vmm, &err))
        return teardown(vmm), fail(report_fd, err.msg);
#ifdef SG_VMM_HAVE_HMP
    if (!sg_hmp_link_init(vmm, &err))
        return teardown(vmm), fail(report_fd, err.msg);
#endif

    vm->pause_req = true;   /* the vCPU starts parked; cont releases it */
    vmm->prelaunch = vmm->opts.start_paused;
    warm_heap(vm->ram_size);
    if (vmm->opts.loadvm[0] && !sg_vmm_loadvm_startup(vmm, vmm->opts.loadvm, &err))
        return teardown(vmm), fail(report_fd, err.msg);
    if (!sg_vm_start_vcpus(vm, &err))
        return teardown(vmm), fail(report_fd, err.msg);
    if (vmm->opts.pidfile[0]) {
        FILE *f = fopen(vmm->opts.pidfile, "w");
        if (!f) {
            char m[700];
            snprintf(m, sizeof(m), "%s: %s", vmm->opts.pidfile, strerror(errno));
            return teardown(vmm), fail(report_fd, m);
        }
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
        vmm->wrote_pidfile = true;
    }
    daemonize_report(report_fd, true, NULL);
    if (!vmm->opts.start_paused) {
        vmm->running = true;
        sg_vmm_cont(vmm, false);
    }

    int rc = run_loop(vmm, sig_fd);

    teardown(vmm);
    return rc;
}
