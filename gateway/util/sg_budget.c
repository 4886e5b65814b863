/* sg_budget.c: see sg_budget.h. */
#include "sg_budget.h"

void sg_budget_init(struct sg_budget *b, size_t limit)
{
    b->members = NULL;
    b->used = b->peak = 0;
    b->limit = limit;
    b->evictions = 0;
    b->evicting = false;
}

void sg_budget_join(struct sg_budget *b, struct sg_budget_member *m,
                    size_t (*current)(struct sg_budget_member *),
                    void (*evict)(struct sg_budget_member *))
{
    m->b = b;
    m->held = 0;
    m->current = current;
    m->evict = evict;
    m->next = b->members;
    if (b->members)
        b->members->pprev = &m->next;
    m->pprev = &b->members;
    b->members = m;
}

void sg_budget_leave(struct sg_budget_member *m)
{
    if (!m->b)
        return;
    m->b->used -= m->held;
    m->held = 0;
    *m->pprev = m->next;
    if (m->next)
        m->next->pprev = m->pprev;
    m->next = NULL;
    m->pprev = NULL;
    m->b = NULL;
}

static void account(struct sg_budget_member *m, size_t held)
{
    struct sg_budget *b = m->b;
    b->used = b->used - m->held + held;
    m->held = held;
    if (b->used > b->peak)
        b->peak = b->used;
}

void sg_budget_set(struct sg_budget_member *m, size_t held)
{
    struct sg_budget *b = m->b;
    if (!b)
        return;
    account(m, held);
    /* An eviction in progress (its callbacks report their new sizes here)
     * finishes the job itself. */
    if (b->used <= b->limit || b->evicting)
        return;
    b->evicting = true;
    for (struct sg_budget_member *x = b->members; x; x = x->next)
        if (x->current)
            account(x, x->current(x));
    while (b->used > b->limit) {
        struct sg_budget_member *big = NULL;
        for (struct sg_budget_member *x = b->members; x; x = x->next)
            if (x->held && (!big || x->held > big->held))
                big = x;
        if (!big)
            break;
        b->evictions++;
        big->evict(big);
        sg_budget_leave(big);   /* whatever the callback did */
    }
    b->evicting = false;
}
