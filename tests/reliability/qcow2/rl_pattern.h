/* rl_pattern.h: self-describing test data for the crash harness.
 *
 * The disk is cut into "slots" at odd, unaligned offsets (so writes straddle
 * clusters and take the read-modify-write paths).  Each write fills a whole
 * slot with a header naming (slot, generation) and a body derived from both,
 * so a reader can tell which write it sees, or that the slot is torn, without
 * any side table.  tests/lib/sg_reliability_util.py mirrors this layout. */
#ifndef RL_PATTERN_H
#define RL_PATTERN_H

#include <stddef.h>
#include <stdint.h>

#define RL_SLOT_LEN    6000u
#define RL_SLOT_STRIDE 41472u   /* 40.5 KiB: slots drift across 64 KiB and 4 KiB clusters */
#define RL_SLOT_BASE   100u
#define RL_VMSTATE_PAGE 4096u

static inline uint64_t rl_slot_off(unsigned slot)
{
    return RL_SLOT_BASE + (uint64_t)slot * RL_SLOT_STRIDE;
}

/* Fills buf (RL_SLOT_LEN bytes) with generation gen of the slot; gen 0 is
 * all zeroes (never written, or discarded). */
void rl_slot_fill(uint8_t *buf, unsigned slot, uint32_t gen);
/* The generation a slot holds: >= 0, or -1 when it is neither zero nor one
 * whole generation (a torn or foreign write). */
long rl_slot_classify(const uint8_t *buf, unsigned slot);

/* VM state of the snapshot with tag number `tag`: len bytes, every third
 * page left zero so the engine's "zero pages stay unallocated" path runs. */
void rl_vmstate_fill(uint8_t *buf, size_t len, uint32_t tag);

#endif
