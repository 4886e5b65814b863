/* hmp_cmds.h: the command table (in the spirit of QEMU's hmp-commands.hx):
 * names, argument specs, help texts for both profiles. */
#ifndef SG_HMP_CMDS_H
#define SG_HMP_CMDS_H

#include <stdbool.h>

#include "hmp_strbuf.h"

enum sg_hmp_op {
    SG_HMP_OP_SAVEVM,
    SG_HMP_OP_LOADVM,
    SG_HMP_OP_DELVM,
    SG_HMP_OP_INFO,            /* bare `info`: lists the subcommands */
    SG_HMP_OP_INFO_SNAPSHOTS,
    SG_HMP_OP_INFO_STATUS,
    SG_HMP_OP_INFO_BLOCK,
    SG_HMP_OP_INFO_JOBS,
    SG_HMP_OP_INFO_VERSION,
    SG_HMP_OP_STOP,
    SG_HMP_OP_CONT,
    SG_HMP_OP_SYSTEM_RESET,
    SG_HMP_OP_SYSTEM_POWERDOWN,
    SG_HMP_OP_PMEMSAVE,
    SG_HMP_OP_QUIT,
    SG_HMP_OP_HELP,
};

/* Argument specs (a tiny subset of QEMU's): */
enum sg_hmp_args {
    SG_HMP_ARGS_NONE,      /* nothing may follow */
    SG_HMP_ARGS_OPT_NAME,  /* [NAME] */
    SG_HMP_ARGS_NAME,      /* [-t|-i] NAME (flags in the snapgate profile only) */
    SG_HMP_ARGS_REST,      /* the rest of the line, words (help) */
    SG_HMP_ARGS_ADDR_SIZE_FILE,  /* QEMU's "val:l,size:i,filename:s" (pmemsave) */
};

struct sg_hmp_cmd_def {
    const char *names;      /* "stop|s": name and aliases */
    enum sg_hmp_op op;
    enum sg_hmp_args args;
    bool is_info;           /* an `info` subcommand */
    bool snapgate_only;     /* QEMU 7.2 has no such command (`info jobs`) */
    const char *params;     /* snapgate profile's help */
    const char *help;
};

/* Finds a top-level command or (is_info) an info subcommand by name or
 * alias; NULL when there is none. */
const struct sg_hmp_cmd_def *sg_hmp_cmd_find(const char *name, bool is_info);
/* The definitions, for completion: `*n` receives the count. */
const struct sg_hmp_cmd_def *sg_hmp_cmd_table(bool is_info, unsigned *n);
/* The first name of an entry ("stop" for "stop|s"), into buf. */
void sg_hmp_cmd_primary(const struct sg_hmp_cmd_def *d, char *buf, unsigned n);

/* `help [TOPIC...]` output for a profile (text with "\n").  Returns false
 * when TOPIC is not one of ours (the caller may forward it). */
bool sg_hmp_help(int profile, const char *topic, const char *subtopic, struct sg_strbuf *out);

#endif
