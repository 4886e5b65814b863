/* sg_error: an error message built where the fault is known and passed up
 * (QEMU's Error **errp idea without allocation).  Every function that can
 * fail takes a `struct sg_error *err` (may be NULL) and returns bool/int. */
#ifndef SG_ERROR_H
#define SG_ERROR_H

#include <stdbool.h>

/* QMP error classes that users and libvirt see. */
#define SG_ERR_GENERIC          "GenericError"
#define SG_ERR_COMMAND_NOT_FOUND "CommandNotFound"
#define SG_ERR_DEVICE_NOT_FOUND "DeviceNotFound"

struct sg_error {
    bool set;
    char cls[32];    /* QMP error class, SG_ERR_GENERIC unless said otherwise */
    char msg[1024];  /* human-readable, no trailing newline */
    int errnum;      /* the errno behind it (sg_error_set_errno), else 0 */
};

/* Sets a GenericError; the first error set wins (later calls are ignored). */
void sg_error_set(struct sg_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void sg_error_set_class(struct sg_error *err, const char *cls, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Like sg_error_set but appends ": strerror(errnum)" and keeps errnum. */
void sg_error_set_errno(struct sg_error *err, int errnum, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Prepends "PREFIX: " to an error that is set (context added on the way up). */
void sg_error_prefix(struct sg_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void sg_error_clear(struct sg_error *err);

#endif
