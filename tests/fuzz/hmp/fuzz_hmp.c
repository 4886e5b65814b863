/* libFuzzer target for the HMP layer's input-facing pure parts: the line
 * parser (both profiles) and the snapshot-list model built from back-end
 * JSON, with resolution and both info snapshots formats over it.
 * Byte 0 picks the part; the rest is the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hmp_parse.h"
#include "hmp_snap.h"
#include "sg_hmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    char *s = malloc(size);
    if (!s)
        return 0;
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    if (data[0] & 1) {
        json_t *j = json_loads(s, JSON_DECODE_ANY, NULL);
        struct sg_hmp_disks d;
        if (j && sg_hmp_disks_from_qmp(&d, json_object_get(j, "block"),
                                       json_object_get(j, "nodes"), NULL)) {
            struct sg_strbuf out = {0};
            sg_hmp_format_snapshots(&d, NULL, SG_HMP_PROFILE_QEMU72, &out);
            sg_hmp_format_snapshots(&d, "disk1", SG_HMP_PROFILE_SNAPGATE, &out);
            struct sg_hmp_resolved res;
            struct sg_error err = {0};
            int vs = sg_hmp_vmstate_disk(&d, NULL, &err);
            const char *name = json_string_value(json_object_get(j, "name"));
            for (int how = 0; how < 3; how++)
                sg_hmp_resolve(&d, vs, name ? name : "1", how == 0 ? 0 : how == 1 ? 't' : 'i',
                               how != 1, "loadvm", &res, &err);
            sg_hmp_format_block(json_object_get(j, "block"), &out);
            sg_hmp_format_jobs(json_object_get(j, "jobs"), &out);
            sg_hmp_format_status(json_object_get(j, "status"), &out);
            sg_sb_free(&out);
            sg_hmp_disks_clear(&d);
        }
        json_decref(j);
    } else {
        struct sg_hmp_parsed p;
        sg_hmp_parse(s, SG_HMP_PROFILE_QEMU72, &p);
        sg_hmp_parse(s, SG_HMP_PROFILE_SNAPGATE, &p);
    }
    free(s);
    return 0;
}

#ifndef SG_LIBFUZZER
/* Without libFuzzer: replays the seeds below (a regression test that keeps
 * the target compiling and running in every build). */
static const char *const seeds[] = {
    "\x00savevm \"a\\\"b\" x",
    "\x00loadvm -i",
    "\x00info snapshots \"",
    "\x00help info status extra words",
    "\x00\"\\",
    "\x01{\"block\": [{\"device\": \"drive0\", \"inserted\": {\"node-name\": \"disk0\", \"drv\": "
    "\"qcow2\", \"image\": {\"snapshots\": [{\"id\": \"1\", \"name\": \"1\", \"vm-state-size\": "
    "-5, \"date-sec\": -99999999999, \"vm-clock-sec\": 9223372036854775807}]}}}], \"name\": "
    "\"1\"}",
    "\x01{\"block\": [{\"inserted\": 3}, {}], \"nodes\": [1, {\"node-name\": null}]}",
    "\x01{\"block\": [], \"jobs\": [{\"total-progress\": 0}, 4], \"status\": []}",
};

int main(void)
{
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        size_t n = seeds[i][0] ? strlen(seeds[i]) : 1 + strlen(seeds[i] + 1);
        LLVMFuzzerTestOneInput((const uint8_t *)seeds[i], n);
    }
    return 0;
}
#endif
