/* snapgate-img: offline tool for snapgate's qcow2 engine (a small
 * qemu-img-like CLI; INTERFACES.md section 1.3). */
#include "img.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: snapgate-img COMMAND [ARGS]\n"
    "\n"
    "  create FILE SIZE                  create a qcow2 v3 image (64 KiB clusters,\n"
    "                                    16-bit refcounts); SIZE takes k, M, G, T\n"
    "  info [--output=json] FILE         show format, sizes and snapshots\n"
    "  check [-r leaks|all] FILE         check consistency (exit 0 clean,\n"
    "                                    2 corruption, 3 leaks only); -r\n"
    "                                    repairs leaked clusters\n"
    "  snapshot -l FILE                  list internal snapshots\n"
    "  snapshot -c TAG FILE              create a snapshot\n"
    "  snapshot -a [-i|-t] NAME FILE     apply (revert the disk to) a snapshot\n"
    "  snapshot -d [-i|-t] NAME FILE     delete a snapshot\n"
    "\n"
    "NAME matches a tag first, then an ID; -t matches tags only, -i IDs only.\n"
    "See snapgate-img(1).\n";

void img_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("snapgate-img: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 1;
    }
    argc = img_take_global_options(argc, argv);
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 1;
    }
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
    img_error("unknown command '%s' (try --help)", cmd);
    return 1;
}
