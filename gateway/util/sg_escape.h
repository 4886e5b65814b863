/* sg_escape.h: snapshot tags made safe for a terminal (issue 17).
 *
 * A tag is any bytes but NUL (qemu-img writes whatever it is given).  For a
 * terminal, a tag that is valid UTF-8 without control characters prints as
 * it is; any other is printed as a double-quoted string in the monitor's
 * syntax, with `\\` and `\"` for backslash and quote, `\n`, `\r`, `\t`, and
 * `\xHH` for every other C0 control byte, DEL and each byte that is not part
 * of valid UTF-8, and `\u0080`..`\u009f` for the C1 controls.  The quotes
 * say the tag was escaped, so every tag reads back unambiguously; plain tags
 * are unchanged (QEMU 7.2 prints every tag raw: the qemu-7.2 profile keeps
 * that, byte for byte). */
#ifndef SG_ESCAPE_H
#define SG_ESCAPE_H

#include <stdbool.h>
#include <stddef.h>

/* Whether tag prints as it is. */
bool sg_tag_is_plain(const char *tag);
/* The tag as a terminal should show it: malloc'd, NULL only when out of memory. */
char *sg_tag_for_terminal(const char *tag);

#endif
