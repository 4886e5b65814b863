/* img_cli.c: what every subcommand shares to behave like qemu-img on the
 * command line: its usage errors (and their "Try ... --help" line), the
 * getopt loop's error cases, and how -U reaches the open. */
#include "img.h"

#include <getopt.h>
#include <stdarg.h>
#include <string.h>

void img_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("snapgate-img: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int img_usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("snapgate-img: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nTry 'snapgate-img --help' for more information\n", stderr);
    va_end(ap);
    return 1;
}

int img_getopt_error(int c, char **argv)
{
    /* optstrings start with ':' so that getopt stays silent and we can
     * word the errors as qemu-img does. */
    if (c == ':')
        return img_usage_error("missing argument for option '%s'", argv[optind - 1]);
    return img_usage_error("unrecognized option '%s'", argv[optind - 1]);
}

bool img_check_format(const char *file, const char *fmt)
{
    if (!fmt || !strcmp(fmt, "qcow2") || !strcmp(fmt, "raw"))
        return true;
    img_error("%s: snapgate-img handles the qcow2 and raw formats only, not '%s'", file, fmt);
    return false;
}

bool img_output_format(const char *arg, bool *json)
{
    if (!strcmp(arg, "json") || !strcmp(arg, "human")) {
        *json = !strcmp(arg, "json");
        return true;
    }
    img_error("--output must be used with human or json as argument.");
    return false;
}
