/* block_lock.c: image locking compatible with QEMU's file driver.
 *
 * QEMU (block/file-posix.c) expresses who uses an image as open file
 * description (OFD) read locks on single bytes of the image file:
 *   byte 100 + i   held while this user HAS permission i,
 *   byte 200 + i   held while this user does NOT SHARE permission i,
 * for the permissions 0 "consistent read", 1 "write", 2 "write unchanged",
 * 3 "resize".  A user may take permission i only if nobody holds byte
 * 200 + i, and may refuse to share i only if nobody holds byte 100 + i.
 * Because the locks are shared (F_RDLCK), any number of users can hold the
 * same bytes; the test for a conflict asks whether an exclusive lock could
 * be taken (F_OFD_GETLK with F_WRLCK).  Taking the same bytes here makes
 * QEMU, qemu-img and snapgate refuse one another exactly as QEMU refuses
 * itself.
 *
 * What we take, as QEMU for a qcow2/raw image:
 *   read-write          perm {read, write, write unchanged, resize},
 *                       not shared {write, resize}
 *   read-only           perm {read}, not shared {write, resize}
 *   read-only, -U       perm {read}, everything shared (force-share)
 * OFD locks belong to the open file description, so they go away with the
 * last close of the fd (or the death of the process); two opens of one
 * image in one process conflict as they would in two processes. */
#include "block_int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#define LOCK_PERM_BASE   100
#define LOCK_SHARED_BASE 200

enum { PERM_READ = 1, PERM_WRITE = 2, PERM_WRITE_UNCHANGED = 4, PERM_RESIZE = 8, PERM_ALL = 15 };

static const char *const perm_names[] = {"consistent read", "write", "write unchanged", "resize"};

static int lock_byte(int fd, int byte, short type)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
        .l_type = type,
    };
    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1: another open file description holds the byte; 0: free; <0: -errno. */
static int byte_taken(int fd, int byte)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
        .l_type = F_WRLCK,
    };
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

static void busy(struct sg_error *err, const char *path, bool shared, int bit)
{
    sg_error_set(err, "Failed to get %s\"%s\" lock\nIs another process using the image [%s]?",
                 shared ? "shared " : "", perm_names[bit], path);
}

bool sg_block_lock(int fd, const char *path, bool readonly, bool force_share,
                   struct sg_error *err)
{
    unsigned perm = readonly ? PERM_READ : PERM_ALL;
    unsigned shared = force_share ? PERM_ALL : PERM_ALL & ~(unsigned)(PERM_WRITE | PERM_RESIZE);
    /* Take our bytes first, then look for others': two openers racing both
     * see each other (as QEMU's raw_handle_perm_lock does). */
    for (int i = 0; i < 4; i++) {
        int r = 0;
        if (perm & (1u << i))
            r = lock_byte(fd, LOCK_PERM_BASE + i, F_RDLCK);
        if (!r && !(shared & (1u << i)))
            r = lock_byte(fd, LOCK_SHARED_BASE + i, F_RDLCK);
        if (r == -EINVAL || r == -ENOTSUP || r == -ENOLCK)
            return true;   /* no OFD locks on this file system: QEMU carries on too */
        if (r == -EAGAIN || r == -EACCES) {
            busy(err, path, !(perm & (1u << i)), i);
            return false;
        }
        if (r < 0) {
            sg_error_set_errno(err, -r, "Failed to lock byte %d", LOCK_PERM_BASE + i);
            return false;
        }
    }
    /* Others' locks: the permissions we take, then the ones we keep to
     * ourselves (QEMU's order, so its first message is ours too). */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < 4; i++) {
            bool want = pass == 0 ? (perm & (1u << i)) : !(shared & (1u << i));
            if (!want)
                continue;
            int r = byte_taken(fd, (pass == 0 ? LOCK_SHARED_BASE : LOCK_PERM_BASE) + i);
            if (r == 1) {
                busy(err, path, pass == 1, i);
                return false;
            }
            if (r < 0 && r != -EINVAL && r != -ENOTSUP) {
                sg_error_set_errno(err, -r, "Failed to check lock byte %d", LOCK_PERM_BASE + i);
                return false;
            }
        }
    }
    return true;
}
