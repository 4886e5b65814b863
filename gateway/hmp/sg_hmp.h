/* sg_hmp.h: the one HMP path shared by every front end.
 *
 * An HMP line is parsed, its snapshot name is resolved against the live
 * snapshot lists of every disk, and it becomes explicit QMP (snapshot-save /
 * snapshot-load / snapshot-delete jobs with explicit devices and vmstate).
 * The engine is event driven and transport free: it never opens a socket.
 * The owner (the gateway, or snapgate-vmm for its own human-monitor-command)
 * gives it a way to send QMP commands, feeds it the back end's events and
 * calls sg_hmp_tick() about every 100 ms while something runs.
 *
 * Threading: single threaded; every function runs on the owner's loop.
 * Callbacks given to the back end may be invoked synchronously (from inside
 * backend.qmp) or later; both are fine. */
#ifndef SG_HMP_H
#define SG_HMP_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <jansson.h>

/* Output profile (INTERFACES.md section 3).  The values are those of
 * enum sg_hmp_style in gateway/gw.h, so the gateway can pass its style
 * straight through. */
enum sg_hmp_profile {
    SG_HMP_PROFILE_SNAPGATE = 0, /* for people: notes, IDs where unambiguous */
    SG_HMP_PROFILE_QEMU72 = 1,   /* byte-identical to QEMU 7.2, "\r\n" ends */
    /* QEMU 7.2's replies, except an "Error: " reply where QEMU 7.2 would act on another
     * snapshot than the name says (the table in compat/sg_q72_safe.h) */
    SG_HMP_PROFILE_LIBVIRT_SAFE = 2,
};

/* Reply to one QMP command: {"return": ...} or {"error": {"class", "desc"}},
 * borrowed for the duration of the call.  NULL means the back end died (or
 * the link closed) before answering. */
typedef void (*sg_hmp_reply_fn)(void *cb_opaque, json_t *reply);

struct sg_hmp_backend {
    /* Sends {"execute": NAME, "arguments": {...}} (no "id"; the back end link
     * adds its own).  The callee takes over the reference to `cmd`.  `cb` must
     * be called exactly once, with the reply or with NULL. */
    void (*qmp)(void *opaque, json_t *cmd, sg_hmp_reply_fn cb, void *cb_opaque);
    void *opaque;
};

struct sg_hmp_options {
    /* --vmstate-node: node that receives the VM state; NULL = the first
     * writable snapshot-capable root node in drive order. */
    const char *vmstate_node;
    /* Job ids are "<prefix>savevm-<n>", "<prefix>loadvm-<n>", ...; NULL =
     * "hmp-".  The counter is per engine and only grows. */
    const char *job_id_prefix;
    /* Clock for the default savevm tag (vm-%Y%m%d%H%M%S, local time);
     * NULL = time(). */
    time_t (*now)(void *opaque);
    void *now_opaque;
    /* The back end's snapshot-save replaces an existing tag itself, keeping
     * the old snapshot if the save fails (snapgate-vmm).  When false, savevm
     * over an existing tag runs snapshot-delete, then snapshot-save. */
    bool backend_replaces;
    /* The back end's snapshot-load finds the tag by tag only (snapgate-vmm).
     * When false (QEMU 7.2: qcow2 tries the name as an ID first, so
     * snapshot-load of tag "1" restores the snapshot whose ID is 1), the
     * snapgate profile refuses loadvm of a tag that is another snapshot's
     * ID on some disk instead of restoring the wrong one. */
    bool backend_exact_tags;
    /* The back end's human-monitor-command is a snapgate engine as well
     * (snapgate-vmm): lines this engine does not know are answered here
     * (QEMU's texts in the qemu-7.2 profile) instead of being sent there,
     * where they would be just as unknown. */
    bool no_forward;
};

struct sg_hmp;
struct sg_hmp_cmd;

/* Whole output of one line (may be "").  `quit` is true for the quit
 * command: the engine sends nothing to the back end for it; the owner decides
 * what quitting means (the gateway exits; the VMM stops). */
typedef void (*sg_hmp_done_fn)(void *opaque, const char *text, bool quit);
/* Progress of the snapshot job started by the line, from query-jobs polling
 * in sg_hmp_tick(); bytes done / bytes total. */
typedef void (*sg_hmp_progress_fn)(void *opaque, const char *job_id,
                                   unsigned long long done, unsigned long long total);

/* The strings in `opt` are copied; `be` is copied too.  Never fails for
 * valid arguments (returns NULL only when out of memory). */
struct sg_hmp *sg_hmp_new(const struct sg_hmp_backend *be, const struct sg_hmp_options *opt);
/* Frees the engine.  Running commands are abandoned without calling their
 * `done`; memory still referenced by back-end callbacks that have not been
 * called yet is released when they are (so the back end may outlive it). */
void sg_hmp_free(struct sg_hmp *h);

/* Executes one HMP line.  `done` is called exactly once (possibly before
 * sg_hmp_exec returns, when the line needs no back-end round trip or the
 * back end answers synchronously); then the handle is gone.  The return
 * value is usable with sg_hmp_cancel/sg_hmp_detach until `done` runs; it is
 * NULL when `done` already ran.  `profile` is an enum sg_hmp_profile value.
 * Lines run concurrently (an `info status` from one front end is not held
 * up by another's savevm); a front end that wants ordered output (the
 * readline monitor) sends its next line after `done`.  `done` must not free
 * the engine. */
struct sg_hmp_cmd *sg_hmp_exec(struct sg_hmp *h, const char *line, int profile,
                               sg_hmp_done_fn done, sg_hmp_progress_fn progress, void *opaque);
/* Ctrl-C: sends job-cancel for the snapshot job the command waits for (if
 * any); the command still ends through `done` with the job's error. */
void sg_hmp_cancel(struct sg_hmp_cmd *c);
/* The requester went away: `done`/`progress` are never called again; the
 * command itself runs to its end (its job is waited for and dismissed). */
void sg_hmp_detach(struct sg_hmp_cmd *c);

/* Only inside `done`: true when the line failed (an error reply, an unknown
 * command, a parse error, a cancelled job).  The readline monitor drops the
 * lines typed ahead after a failure. */
bool sg_hmp_done_failed(const struct sg_hmp *h);

/* Notes on how a name was resolved ("(matched snapshot ID 2, tag 'x')"),
 * known before the job starts.  Without a note function they open the
 * reply given to `done`; with one they go to it as soon as they are known
 * (the monitor shows them before the progress bar) and the reply leaves
 * them out.  Call right after sg_hmp_exec returned a handle. */
typedef void (*sg_hmp_note_fn)(void *opaque, const char *text);
void sg_hmp_set_note(struct sg_hmp_cmd *c, sg_hmp_note_fn fn);

/* Every event from the back end (borrowed), e.g. JOB_STATUS_CHANGE, STOP. */
void sg_hmp_on_event(struct sg_hmp *h, json_t *event);
/* Called by the owner about every 100 ms: polls query-jobs for the progress
 * of running snapshot jobs.  Cheap when nothing runs. */
void sg_hmp_tick(struct sg_hmp *h);
/* True while a line is running (the owner may tick only then). */
bool sg_hmp_busy(const struct sg_hmp *h);

/* ---- Completion (readline) ----------------------------------------------
 * Candidates for the word being typed: `buf` is the line so far, the word
 * starts at byte `start` and is `word`.  Command names (and `info`
 * subcommands), `-t`/`-i`, and for savevm/loadvm/delvm the snapshot tags (or
 * IDs after -i) from a cache refreshed after every snapshot job and by
 * sg_hmp_refresh_snapshots().  Returns a malloc'd NULL-terminated array of
 * malloc'd strings (free with sg_hmp_strv_free), or NULL when none match. */
char **sg_hmp_complete(struct sg_hmp *h, const char *buf, size_t start, const char *word);
void sg_hmp_strv_free(char **v);
/* The owner's current snapshot (the gateway's: last saved or loaded), or
 * NULL; `info snapshots` names it after the table in the snapgate profile.
 * The string is copied. */
void sg_hmp_set_current(struct sg_hmp *h, const char *tag);
/* Completion of a snapshot name typed without quotes and with spaces in it
 * ("loadvm with sp" -> "loadvm \"with space\"").  When `buf[0..point)`
 * ends inside the NAME argument of savevm/loadvm/delvm [-t|-i], returns
 * the names (raw, unquoted) that begin with what was typed there, and sets
 * `*arg_start` to where the argument begins; NULL otherwise or when none
 * match.  Free with sg_hmp_strv_free. */
char **sg_hmp_complete_name(struct sg_hmp *h, const char *buf, size_t point, size_t *arg_start);
/* `name` as the parser reads it back: quoted and escaped when needed;
 * `open` leaves the closing quote off (a prefix still being typed).
 * malloc'd; NULL when out of memory. */
char *sg_hmp_quote_name(const char *name, bool open);
/* Asks the back end for the snapshot lists now (e.g. right after connect). */
void sg_hmp_refresh_snapshots(struct sg_hmp *h);

#endif
