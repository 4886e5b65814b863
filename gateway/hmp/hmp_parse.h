/* hmp_parse.h: the HMP line parser, with QEMU's quoting rules (a name may be
 * "quoted with spaces" and escapes \" \\ \' \n \r; unquoted words end at
 * white space) and, in the snapgate profile, the -t/-i flags. */
#ifndef SG_HMP_PARSE_H
#define SG_HMP_PARSE_H

#include <stdbool.h>
#include <stdint.h>

#include "hmp_cmds.h"

enum sg_hmp_parse_status {
    SG_HMP_PARSE_OK,
    SG_HMP_PARSE_EMPTY,    /* blank line: no output */
    SG_HMP_PARSE_UNKNOWN,  /* not ours: forward it, or print `unknown` */
    SG_HMP_PARSE_ERROR,    /* `error` holds the whole reply ("\n" ends) */
};

#define SG_HMP_NAME_MAX 1024  /* QEMU's argument buffer; longer is truncated */

struct sg_hmp_parsed {
    const struct sg_hmp_cmd_def *def;
    bool has_name;
    char name[SG_HMP_NAME_MAX];   /* TAG / NAME / FILE, quotes and escapes removed */
    uint64_t addr;                /* pmemsave's ADDR (any 64-bit value) */
    uint32_t size;                /* and SIZE */
    char reg[128];                /* a $register an argument names: the line is
                                     SG_HMP_PARSE_UNKNOWN, for the back end */
    char flag;                    /* 't', 'i' or 0 */
    char topic[128], subtopic[128];   /* help's words */
    char unknown[256];            /* for "unknown command: '%s'" */
    char error[2 * SG_HMP_NAME_MAX];
};

/* Never fails for any input (bad lines give SG_HMP_PARSE_ERROR with the
 * reply QEMU would give). `profile` is an enum sg_hmp_profile. */
enum sg_hmp_parse_status sg_hmp_parse(const char *line, int profile, struct sg_hmp_parsed *out);

#endif
