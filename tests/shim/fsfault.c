/* fsfault: an LD_PRELOAD shim for mxd's fault tests. It watches writes to
 * files whose path starts with $FSFAULT_DIR (the database, its WAL and the
 * spool) and does two things:
 *
 * - Power cut (FSFAULT_UNDO=FILE): before each write or truncation it
 *   appends the bytes about to be overwritten (and the old file size) to
 *   FILE; after a successful fsync/fdatasync of a file it appends a "synced"
 *   mark for that file. After SIGKILL, tests/integration/fsfault.py replays
 *   the log backwards from the end to each file's last mark, which puts
 *   every watched file back to what it held at its last fsync: the writes a
 *   power cut would have lost (page cache only) are gone.
 * - Disk full (FSFAULT_ENOSPC=FLAGFILE): while FLAGFILE exists, writes and
 *   fallocate on watched files fail with ENOSPC.
 *
 * Owns one mutex and the undo log fd; any thread. It does not model
 * directory entries (a created or unlinked file stays so), mmap'd files
 * (SQLite's -shm, rebuilt from the WAL at recovery) or reordering of
 * synced writes. Test-only: aborts if the log cannot be written. */
#undef _FILE_OFFSET_BITS /* define pwrite and pwrite64 both, not one as the other */
#define _GNU_SOURCE
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REC_MAGIC 0x46534655u /* "FSFU" */
#define REC_PRE   1u          /* old bytes at off (len of them), old size */
#define REC_SYNC  2u          /* the file was synced */

struct rec {
    uint32_t magic, type, path_len, pad;
    uint64_t off, len, old_size;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int undo_fd = -2; /* -2: not opened yet, -1: no undo log */

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_posix_fallocate)(int, off_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);

static void
resolve(void)
{
    if (real_write != NULL)
        return;
    real_pwrite = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = (ssize_t(*)(int, const void *, size_t, off_t))dlsym(RTLD_NEXT, "pwrite64");
    real_ftruncate = (int (*)(int, off_t))dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = (int (*)(int, off_t))dlsym(RTLD_NEXT, "ftruncate64");
    real_fsync = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    real_fallocate = (int (*)(int, int, off_t, off_t))dlsym(RTLD_NEXT, "fallocate");
    real_posix_fallocate = (int (*)(int, off_t, off_t))dlsym(RTLD_NEXT, "posix_fallocate");
    real_writev = (ssize_t(*)(int, const struct iovec *, int))dlsym(RTLD_NEXT, "writev");
    real_pwritev = (ssize_t(*)(int, const struct iovec *, int, off_t))dlsym(RTLD_NEXT, "pwritev");
    real_write = (ssize_t(*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
}

/* The watched path of fd into buf, or NULL. */
static const char *
watched(int fd, char *buf, size_t size)
{
    const char *dir = getenv("FSFAULT_DIR");
    char link[64];
    ssize_t n;

    if (dir == NULL || *dir == '\0' || fd < 0)
        return NULL;
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    n = readlink(link, buf, size - 1);
    if (n <= 0)
        return NULL;
    buf[n] = '\0';
    return strncmp(buf, dir, strlen(dir)) == 0 ? buf : NULL;
}

static bool
disk_full(void)
{
    const char *flag = getenv("FSFAULT_ENOSPC");

    return flag != NULL && *flag != '\0' && access(flag, F_OK) == 0;
}

/* A write to a watched file while the disk is "full": it must fail with
 * ENOSPC (the calls that do not log undo records ask only this). */
static bool
full_for(int fd)
{
    char pbuf[PATH_MAX];

    return watched(fd, pbuf, sizeof(pbuf)) != NULL && disk_full();
}

static void
log_all(const void *p, size_t n)
{
    const char *c = p;

    while (n > 0) {
        ssize_t w = real_write(undo_fd, c, n);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            abort();
        c += w;
        n -= (size_t)w;
    }
}

/* Appends a record; call with mu held. */
static void
log_rec(uint32_t type, const char *path, uint64_t off, const void *old, uint64_t len,
        uint64_t old_size)
{
    struct rec r = {REC_MAGIC, type, (uint32_t)strlen(path), 0, off, len, old_size};

    if (undo_fd == -2) {
        const char *undo = getenv("FSFAULT_UNDO");

        undo_fd = undo && *undo ? open(undo, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600) : -1;
    }
    if (undo_fd < 0)
        return;
    log_all(&r, sizeof(r));
    log_all(path, r.path_len);
    if (len > 0)
        log_all(old, len);
}

/* Records what [off, off + len) of fd holds now, and its size. */
static void
save_pre(int fd, const char *path, uint64_t off, uint64_t len)
{
    struct stat st;
    char *old = NULL;
    uint64_t have = 0;

    if (fstat(fd, &st) != 0)
        abort();
    if (off < (uint64_t)st.st_size) {
        have = (uint64_t)st.st_size - off < len ? (uint64_t)st.st_size - off : len;
        old = malloc(have ? have : 1);
        if (old == NULL || pread(fd, old, have, (off_t)off) != (ssize_t)have)
            abort();
    }
    log_rec(REC_PRE, path, off, old, have, (uint64_t)st.st_size);
    free(old);
}

static ssize_t
do_pwrite(ssize_t (*fn)(int, const void *, size_t, off_t), int fd, const void *buf, size_t n,
          off_t off)
{
    char pbuf[PATH_MAX];
    const char *path;
    ssize_t rc;

    resolve();
    if ((path = watched(fd, pbuf, sizeof(pbuf))) == NULL)
        return fn(fd, buf, n, off);
    if (disk_full()) {
        errno = ENOSPC;
        return -1;
    }
    pthread_mutex_lock(&mu);
    save_pre(fd, path, (uint64_t)off, n);
    rc = fn(fd, buf, n, off);
    pthread_mutex_unlock(&mu);
    return rc;
}

ssize_t
pwrite(int fd, const void *buf, size_t n, off_t off)
{
    resolve();
    return do_pwrite(real_pwrite, fd, buf, n, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    resolve();
    return do_pwrite(real_pwrite64, fd, buf, n, off);
}

ssize_t
write(int fd, const void *buf, size_t n)
{
    char pbuf[PATH_MAX];
    const char *path;
    ssize_t rc;
    off_t off;

    resolve();
    if ((path = watched(fd, pbuf, sizeof(pbuf))) == NULL)
        return real_write(fd, buf, n);
    if (disk_full()) {
        errno = ENOSPC;
        return -1;
    }
    pthread_mutex_lock(&mu);
    off = (fcntl(fd, F_GETFL) & O_APPEND) ? lseek(fd, 0, SEEK_END) : lseek(fd, 0, SEEK_CUR);
    if (off >= 0)
        save_pre(fd, path, (uint64_t)off, n);
    rc = real_write(fd, buf, n);
    pthread_mutex_unlock(&mu);
    return rc;
}

static int
do_truncate(int (*fn)(int, off_t), int fd, off_t size)
{
    char pbuf[PATH_MAX];
    const char *path;
    struct stat st;
    int rc;

    if ((path = watched(fd, pbuf, sizeof(pbuf))) == NULL)
        return fn(fd, size);
    pthread_mutex_lock(&mu);
    if (fstat(fd, &st) == 0 && size < st.st_size)
        save_pre(fd, path, (uint64_t)size, (uint64_t)(st.st_size - size));
    else
        save_pre(fd, path, (uint64_t)size, 0);
    rc = fn(fd, size);
    pthread_mutex_unlock(&mu);
    return rc;
}

int
ftruncate(int fd, off_t size)
{
    resolve();
    return do_truncate(real_ftruncate, fd, size);
}

int
ftruncate64(int fd, off_t size)
{
    resolve();
    return do_truncate(real_ftruncate64, fd, size);
}

static int
do_sync(int (*fn)(int), int fd)
{
    char pbuf[PATH_MAX];
    const char *path = NULL;
    int rc;

    if ((path = watched(fd, pbuf, sizeof(pbuf))) == NULL)
        return fn(fd);
    pthread_mutex_lock(&mu);
    rc = fn(fd);
    if (rc == 0)
        log_rec(REC_SYNC, path, 0, NULL, 0, 0);
    pthread_mutex_unlock(&mu);
    return rc;
}

int
fsync(int fd)
{
    resolve();
    return do_sync(real_fsync, fd);
}

int
fdatasync(int fd)
{
    resolve();
    return do_sync(real_fdatasync, fd);
}

int
fallocate(int fd, int mode, off_t off, off_t len)
{
    resolve();
    if (full_for(fd)) {
        errno = ENOSPC;
        return -1;
    }
    return real_fallocate(fd, mode, off, len);
}

int
posix_fallocate(int fd, off_t off, off_t len)
{
    resolve();
    if (full_for(fd))
        return ENOSPC;
    return real_posix_fallocate(fd, off, len);
}

/* Vectored writes (libuv's uv_fs_write with several buffers: the spool):
 * disk full only, not logged for the power cut (spool files are never
 * what a 250 rests on). */
ssize_t
writev(int fd, const struct iovec *iov, int n)
{
    resolve();
    if (full_for(fd)) {
        errno = ENOSPC;
        return -1;
    }
    return real_writev(fd, iov, n);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int n, off_t off)
{
    resolve();
    if (full_for(fd)) {
        errno = ENOSPC;
        return -1;
    }
    return real_pwritev(fd, iov, n, off);
}
