/* sg_budget.h: one byte bound shared by many holders (the gateway's output
 * queued for all its front-end clients, unix socket and WebSocket).
 *
 * Each holder (member) says how many bytes it holds now.  When the sum
 * passes the limit the members are first asked for their current size
 * (`current`, optional: a queue may have drained since it last said), and
 * then the member holding most is evicted (`evict`: it must let go of what
 * it holds, e.g. drop its connection, and call sg_budget_leave) until the
 * sum fits again.  The one that holds most is the one that read least: a
 * client that reads its replies holds little and stays.  Single-threaded. */
#ifndef SG_BUDGET_H
#define SG_BUDGET_H

#include <stdbool.h>
#include <stddef.h>

struct sg_budget;

struct sg_budget_member {
    struct sg_budget_member *next, **pprev;
    struct sg_budget *b;        /* NULL: not a member */
    size_t held;
    size_t (*current)(struct sg_budget_member *m);   /* may be NULL */
    void (*evict)(struct sg_budget_member *m);
};

struct sg_budget {
    struct sg_budget_member *members;
    size_t used, limit, peak;
    unsigned long evictions;
    bool evicting;
};

void sg_budget_init(struct sg_budget *b, size_t limit);
void sg_budget_join(struct sg_budget *b, struct sg_budget_member *m,
                    size_t (*current)(struct sg_budget_member *),
                    void (*evict)(struct sg_budget_member *));
/* Gives back what m holds and leaves; safe on a member that is not in. */
void sg_budget_leave(struct sg_budget_member *m);
/* m holds `held` bytes now; over the limit, members are evicted (possibly m
 * itself: check your own state afterwards). */
void sg_budget_set(struct sg_budget_member *m, size_t held);

#endif
