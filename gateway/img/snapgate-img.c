/* snapgate-img: offline tool for snapgate's qcow2 engine (a small
 * qemu-img-like CLI; INTERFACES.md section 1.3). */
#include "img.h"

#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: snapgate-img COMMAND [ARGS]\n"
    "\n"
    "  create [-q] [-f qcow2|raw] [-o OPTIONS] FILE [SIZE]\n"
    "                                    create an image (qcow2 v3, 64 KiB clusters,\n"
    "                                    16-bit refcounts by default); SIZE as\n"
    "                                    qemu-img: 1.5G, 512M, 64k; -o cluster_size=N,\n"
    "                                    size=N (unknown keys are an error)\n"
    "  info [-f FMT] [-U] [--output=human|json] FILE\n"
    "                                    show format, sizes and snapshots\n"
    "  check [-q] [-f FMT] [-U] [--output=human|json] [-r leaks|all] FILE\n"
    "                                    check consistency (exit 0 clean,\n"
    "                                    2 corruption, 3 leaks only); -r\n"
    "                                    repairs leaked clusters\n"
    "  snapshot [-q] [-U] -l FILE                      list internal snapshots\n"
    "  snapshot [-q] -c TAG FILE                       create a snapshot\n"
    "  snapshot [-q] -a [-i|-t] NAME FILE              apply (revert the disk to) a snapshot\n"
    "  snapshot [-q] -d [-i|-t] NAME FILE              delete a snapshot\n"
    "\n"
    "NAME matches a tag first, then an ID; -t matches tags only, -i IDs only.\n"
    "A NAME that is one snapshot's tag and another's ID is refused without -t\n"
    "or -i (qemu-img would take the ID).  See snapgate-img(1).\n";

int main(int argc, char **argv)
{
    if (argc < 2)
        return img_usage_error("Not enough arguments");
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V")) {
        printf("snapgate-img 0.1.0\n");
        return 0;
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
    }
    if (!strcmp(cmd, "create"))
        return img_create(argc - 1, argv + 1);
    if (!strcmp(cmd, "info"))
        return img_info(argc - 1, argv + 1);
    if (!strcmp(cmd, "check"))
        return img_check(argc - 1, argv + 1);
    if (!strcmp(cmd, "snapshot"))
        return img_snapshot(argc - 1, argv + 1);
    return img_usage_error("Command not found: %s", cmd);
}
