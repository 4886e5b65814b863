/* rl_pattern.c: slot and VM-state patterns (see rl_pattern.h). */
#include "rl_pattern.h"

#include <string.h>

static uint32_t xorshift(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void rl_slot_fill(uint8_t *buf, unsigned slot, uint32_t gen)
{
    memset(buf, 0, RL_SLOT_LEN);
    if (gen == 0)
        return;
    memcpy(buf, "SGRL", 4);
    put32(buf + 4, slot);
    put32(buf + 8, gen);
    uint32_t s = (slot * 2654435761u) ^ (gen * 40503u) ^ 0x9e3779b9u;
    if (s == 0)
        s = 1;
    for (size_t i = 12; i + 4 <= RL_SLOT_LEN; i += 4)
        put32(buf + i, xorshift(&s));
}

long rl_slot_classify(const uint8_t *buf, unsigned slot)
{
    uint8_t want[RL_SLOT_LEN];
    size_t i = 0;
    while (i < RL_SLOT_LEN && buf[i] == 0)
        i++;
    if (i == RL_SLOT_LEN)
        return 0;
    if (memcmp(buf, "SGRL", 4) != 0 || get32(buf + 4) != slot)
        return -1;
    uint32_t gen = get32(buf + 8);
    rl_slot_fill(want, slot, gen);
    return gen && memcmp(want, buf, RL_SLOT_LEN) == 0 ? (long)gen : -1;
}

void rl_vmstate_fill(uint8_t *buf, size_t len, uint32_t tag)
{
    uint32_t s = tag * 2246822519u + 1;
    for (size_t i = 0; i < len; i++) {
        if ((i / RL_VMSTATE_PAGE) % 3 == 2)
            buf[i] = 0;
        else
            buf[i] = (uint8_t)(xorshift(&s) >> 7);
    }
}
