/* QEMU 7.2's reply formats, reproduced from observed output (block/qapi.c
 * bdrv_snapshot_dump and util/cutils.c size_to_str behave this way). */
#include "sg_q72.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void sg_q72_size_str(uint64_t v, char *buf, size_t n)
{
    static const char *const suffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
    int e = 0;
    /* Dividing by 1000/1024 first makes values >= 1000 of a unit switch to
     * the next unit, so "%0.3g" never prints an exponent. */
    frexp((double)v / (1000.0 / 1024.0), &e);
    int i = (e - 1) / 10;
    if (i < 0)
        i = 0;
    if (i > 6)
        i = 6;
    uint64_t div = 1ULL << (i * 10);
    snprintf(buf, n, "%0.3g %sB", (double)v / (double)div, suffixes[i]);
}

void sg_q72_clock_str(uint64_t nsec, char *buf, size_t n)
{
    uint64_t secs = nsec / 1000000000ULL;
    snprintf(buf, n, "%02d:%02d:%02d.%03d", (int)(secs / 3600), (int)((secs / 60) % 60),
             (int)(secs % 60), (int)((nsec / 1000000ULL) % 1000));
}

void sg_q72_date_str(int64_t sec, char *buf, size_t n)
{
    time_t t = (time_t)sec;
    struct tm tm;
    if (!localtime_r(&t, &tm) || strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm) == 0)
        snprintf(buf, n, "?");
}

void sg_q72_snapshot_header(char *buf, size_t n, bool icount_column)
{
    if (icount_column)
        snprintf(buf, n, "%-10s%-17s%8s%20s%13s%11s", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
                 "ICOUNT");
    else
        snprintf(buf, n, "%-10s%-17s%8s%20s%13s", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK");
}

void sg_q72_snapshot_row(const struct sg_q72_snapshot *s, char *buf, size_t n, bool icount_column)
{
    char size[32], date[64], clock[64], icount[32] = "";
    sg_q72_size_str(s->vm_state_size, size, sizeof size);
    sg_q72_date_str(s->date_sec, date, sizeof date);
    sg_q72_clock_str(s->vm_clock_nsec, clock, sizeof clock);
    if (s->has_icount)
        snprintf(icount, sizeof icount, "%" PRId64, s->icount);
    if (icount_column)
        snprintf(buf, n, "%-9s %-16s %8s%20s%13s%11s", s->id, s->tag, size, date, clock, icount);
    else
        snprintf(buf, n, "%-9s %-16s %8s%20s%13s", s->id, s->tag, size, date, clock);
}

char *sg_q72_snapshot_row_dup(const struct sg_q72_snapshot *s, bool icount_column)
{
    size_t need = strlen(s->tag) + strlen(s->id) + 256;
    char *buf = malloc(need);
    if (buf)
        sg_q72_snapshot_row(s, buf, need, icount_column);
    return buf;
}

char *sg_q72_crlf_dup(const char *text)
{
    size_t len = 0, nl = 0;
    for (const char *p = text; *p; p++, len++)
        nl += *p == '\n';
    char *out = malloc(len + nl + 1), *q = out;
    if (!out)
        return NULL;
    for (const char *p = text; *p; p++) {
        if (*p == '\n')
            *q++ = '\r';
        *q++ = *p;
    }
    *q = 0;
    return out;
}
