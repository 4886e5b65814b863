/* gw_loop.h: the gateway's single event loop — a libwebsockets context whose
 * "raw" vhost adopts every plain file descriptor the gateway owns (stdin, the
 * back-end QMP socket, the --qmp listener and its clients, the VMM's serial
 * and stderr pipes, a signalfd), plus lws_sul timers.  The web server adds its
 * own vhost to the same context. */
#ifndef SG_GW_LOOP_H
#define SG_GW_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <stdint.h>

#include <libwebsockets.h>

#include "sg_error.h"

struct sg_gw_loop;
struct sg_gw_fd;

struct sg_gw_fd_ops {
    /* The fd is readable (or hung up: read() returns 0 or an error then).
     * Return false to close the descriptor. */
    bool (*readable)(void *opaque, struct sg_gw_fd *f);
    /* Called after the output queue drained, when wanted; may be NULL. */
    void (*drained)(void *opaque, struct sg_gw_fd *f);
    /* The descriptor was closed (by lws, by sg_gw_fd_close, or because a
     * callback returned false).  The handle is gone after this call. */
    void (*closed)(void *opaque, struct sg_gw_fd *f);
};

struct sg_gw_loop *sg_gw_loop_new(struct sg_error *err);
/* Destroys the context; every adopted fd gets its `closed` callback. */
void sg_gw_loop_free(struct sg_gw_loop *l);
struct lws_context *sg_gw_loop_context(struct sg_gw_loop *l);
/* Runs until sg_gw_loop_stop. */
void sg_gw_loop_run(struct sg_gw_loop *l);
void sg_gw_loop_stop(struct sg_gw_loop *l);
/* Clears a stop request so that sg_gw_loop_run can run again. */
void sg_gw_loop_restart(struct sg_gw_loop *l);

/* Adopts `fd` (made non-blocking); the loop closes it when the handle closes. */
struct sg_gw_fd *sg_gw_fd_adopt(struct sg_gw_loop *l, int fd, const struct sg_gw_fd_ops *ops,
                                void *opaque, struct sg_error *err);
/* Same, leaving the fd's blocking mode alone: for the terminal, whose file
 * description stdout shares (O_NONBLOCK there would make printf lose output).
 * The owner then reads only when `readable` says so, at most once per call. */
struct sg_gw_fd *sg_gw_fd_adopt_blocking(struct sg_gw_loop *l, int fd,
                                         const struct sg_gw_fd_ops *ops, void *opaque,
                                         struct sg_error *err);
int sg_gw_fd_fd(const struct sg_gw_fd *f);
/* read(2) on a non-blocking descriptor, retried on EINTR: the bytes read
 * (> 0), 0 at end of file, -1 on an error (errno set), or SG_GW_READ_AGAIN
 * when nothing is there now. */
enum { SG_GW_READ_AGAIN = -2 };
ssize_t sg_gw_fd_read(struct sg_gw_fd *f, void *buf, size_t len);
/* Queues bytes: written at once as far as the fd takes them, the rest when
 * it becomes writable.  Returns false when the queue would exceed 64 MiB
 * (a peer that does not read is to be dropped by the caller). */
bool sg_gw_fd_write(struct sg_gw_fd *f, const void *buf, size_t len);
/* Same, with descriptors passed (SCM_RIGHTS) along with the first byte of
 * `buf`, in order with the rest of the queue; the fds are owned by the call
 * and closed once sent (or when the descriptor closes unsent).  Only for
 * unix sockets. */
bool sg_gw_fd_write_fds(struct sg_gw_fd *f, const void *buf, size_t len, int *fds, size_t nfds);
/* `buf` followed by "\r\n" (one QMP message on a stream): one syscall. */
bool sg_gw_fd_write_line(struct sg_gw_fd *f, const void *buf, size_t len);
/* Bytes queued and not yet written. */
size_t sg_gw_fd_backlog(const struct sg_gw_fd *f);
/* The queue bound sg_gw_fd_write enforces: a write is refused when this
 * many bytes are already waiting (default 64 MiB). */
void sg_gw_fd_set_queue_limit(struct sg_gw_fd *f, size_t bytes);
/* Stops (true) or resumes asking for `readable`: back-pressure on a peer. */
void sg_gw_fd_pause_input(struct sg_gw_fd *f, bool pause);
/* Closes after the queued output was written (`closed` is called later, from
 * the loop, never from inside this call). */
void sg_gw_fd_close(struct sg_gw_fd *f);
/* Closes now, dropping whatever output is queued (a peer that does not
 * read would never let sg_gw_fd_close flush it); `closed` comes later, from
 * the loop. */
void sg_gw_fd_abort(struct sg_gw_fd *f);
/* Stops the callbacks without closing the loop's handle yet: for owners that
 * are freed before the loop ends. */
void sg_gw_fd_detach(struct sg_gw_fd *f);

struct sg_gw_timer {
    lws_sorted_usec_list_t sul;   /* first: the lws callback gets its address */
    void (*fn)(void *opaque);
    void *opaque;
    struct sg_gw_loop *loop;
};
void sg_gw_timer_init(struct sg_gw_timer *t, struct sg_gw_loop *l, void (*fn)(void *), void *opaque);
void sg_gw_timer_arm(struct sg_gw_timer *t, unsigned ms);
void sg_gw_timer_cancel(struct sg_gw_timer *t);

#endif
