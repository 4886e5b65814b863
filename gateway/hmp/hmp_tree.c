/* hmp_tree.c: the snapshot tree under `info snapshots` (snapgate profile
 * only; the qemu-7.2 profile never asks for it).  Drawn as libvirt's
 * snapshot-list --tree, with Proxmox's "NOW" under the snapshot the VM was
 * last saved as or loaded from:
 *
 *   Snapshot tree on drive0:
 *   base (ID 1)
 *   +- before-upgrade (ID 2)
 *   |  `- NOW
 *   `- other (ID 3)
 *
 * Tags are printed as the table prints them in this profile: quoted and
 * escaped when they hold control characters or bytes that are not UTF-8
 * (sg_escape.h). */
#include <stdlib.h>
#include <string.h>

#include "hmp_snap.h"
#include "sg_escape.h"

struct node {
    const char *id, *name, *parent;
    bool done;
};

static void draw(struct node *v, size_t n, size_t i, const char *current, char *prefix,
                 size_t plen, bool last, bool root, struct sg_strbuf *out)
{
    v[i].done = true;
    char *esc = sg_tag_is_plain(v[i].name) ? NULL : sg_tag_for_terminal(v[i].name);
    sg_sb_printf(out, "%.*s%s%s (ID %s)\n", (int)plen, prefix, root ? "" : last ? "`- " : "+- ",
                 esc ? esc : v[i].name, v[i].id);
    free(esc);
    size_t nl = plen;
    if (!root && plen + 3 < 192) {
        memcpy(prefix + plen, last ? "   " : "|  ", 3);
        nl += 3;
    }
    size_t kids = 0, seen = 0;
    bool now = current && !strcmp(current, v[i].id);
    for (size_t k = 0; k < n; k++)
        kids += !v[k].done && v[k].parent && !strcmp(v[k].parent, v[i].id);
    for (size_t k = 0; k < n; k++)
        if (!v[k].done && v[k].parent && !strcmp(v[k].parent, v[i].id))
            draw(v, n, k, current, prefix, nl, ++seen == kids && !now, false, out);
    if (now)
        sg_sb_printf(out, "%.*s`- NOW\n", (int)nl, prefix);
}

void sg_hmp_format_snapshot_tree(json_t *tree, struct sg_strbuf *out)
{
    json_t *list = json_object_get(tree, "snapshots");
    size_t n = json_array_size(list);
    if (!n)
        return;
    struct node *v = calloc(n, sizeof *v);
    if (!v)
        return;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(list, i);
        v[i].id = json_string_value(json_object_get(s, "id"));
        v[i].name = json_string_value(json_object_get(s, "name"));
        v[i].parent = json_string_value(json_object_get(s, "parent"));
        if (!v[i].id || !v[i].name) {
            free(v);
            return;
        }
    }
    const char *current = json_string_value(json_object_get(tree, "current"));
    const char *dev = json_string_value(json_object_get(tree, "device"));
    sg_sb_printf(out, "\nSnapshot tree on %s:\n", dev ? dev : "the vmstate disk");
    char prefix[200];
    /* Roots first (no parent, or a parent that is gone), then whatever a
     * damaged header put in a cycle. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            bool orphan = true;
            for (size_t k = 0; k < n && v[i].parent && orphan; k++)
                orphan = strcmp(v[k].id, v[i].parent) != 0;
            if (!v[i].done && (pass == 1 || orphan))
                draw(v, n, i, current, prefix, 0, true, true, out);
        }
    }
    if (!current)
        sg_sb_puts(out, "NOW: not at a snapshot (none saved or loaded since start)\n");
    free(v);
}
