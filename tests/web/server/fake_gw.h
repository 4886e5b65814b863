/* fake_gw.h: the test-only gw.h implementation (see fake_gw.c). */
#ifndef FAKE_GW_H
#define FAKE_GW_H

#include <stdbool.h>

#include "gw.h"

struct sg_gw *fake_gw_new(struct lws_context *ctx, bool serial, bool demo_snapshots);
void fake_gw_free(struct sg_gw *gw);

#endif
