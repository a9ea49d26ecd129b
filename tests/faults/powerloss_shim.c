/* Power-loss model for the fault harness: an LD_PRELOAD shim that keeps, for every file
 * in one directory, the content the disk is guaranteed to hold: what was there when the
 * file was last fsync()ed or fdatasync()ed.
 *
 *   HOTLINE_POWERLOSS_DIR     the directory modelled (absolute; the relay's database dir)
 *   HOTLINE_POWERLOSS_SHADOW  where the durable copies go (outside that directory)
 *
 * Every write (write, pwrite, pwrite64, writev) and ftruncate to a file in the directory
 * widens that file's dirty extent; an fsync/fdatasync of the file copies the extent from
 * the file into SHADOW/<name> and sets the copy's size to the file's: the copy then equals
 * the file as it was synced. An fsync of the directory itself records the names it holds
 * in SHADOW/.entries (written to a temporary name, then renamed: a kill cannot tear it).
 * After a SIGKILL, tests/faults/powerloss.py rebuilds the directory from these: a name
 * survives only if the last directory sync saw it, with its last synced content.
 *
 * "-shm" files (SQLite's shared-memory index, rebuilt from the WAL on recovery, and written
 * through mmap) are not modelled. Dirty extents are tracked per file name, not per file
 * descriptor: an fsync on any descriptor syncs the file. Not intercepted, because SQLite
 * does not call them: pwritev, sync, syncfs, sync_file_range, msync, copy_file_range.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAXFD 8192
#define MAXFILES 64

struct tracked {
    char name[NAME_MAX + 1];
    off_t lo, hi;     /* bytes [lo, hi) written since the last sync */
    off_t trunc_min;  /* smallest size truncated to since the last sync */
};

static pthread_mutex_t mu = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static char watch[PATH_MAX];
static size_t watch_len;
static char shadow[PATH_MAX];
static short fd_slot[MAXFD]; /* 0: not modelled, -1: the directory, k > 0: files[k - 1] */
static struct tracked files[MAXFILES];
static int nfiles;

static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);

static void die(const char *what) {
    char msg[PATH_MAX + 200];
    int n = snprintf(msg, sizeof msg, "powerloss shim: %s (errno %d)\n", what, errno);
    if (n > 0) (void)!syscall(SYS_write, 2, msg, (size_t)n);
    abort();
}

#define RESOLVE(name) \
    do { \
        *(void **)&real_##name = dlsym(RTLD_NEXT, #name); \
        if (real_##name == NULL) die("dlsym " #name); \
    } while (0)

__attribute__((constructor)) static void init(void) {
    RESOLVE(open); RESOLVE(open64); RESOLVE(openat); RESOLVE(openat64); RESOLVE(close);
    RESOLVE(write); RESOLVE(pwrite); RESOLVE(pwrite64); RESOLVE(writev); RESOLVE(fsync);
    RESOLVE(fdatasync); RESOLVE(ftruncate); RESOLVE(ftruncate64);
    const char *w = getenv("HOTLINE_POWERLOSS_DIR");
    const char *s = getenv("HOTLINE_POWERLOSS_SHADOW");
    if (w == NULL || s == NULL || !*w || !*s) return;
    if (realpath(w, watch) == NULL) die("HOTLINE_POWERLOSS_DIR does not exist");
    if (strlen(s) > 1024 || strlen(watch) > 1024) die("HOTLINE_POWERLOSS_* path too long");
    strcpy(shadow, s);
    watch_len = strlen(watch);
}

static int slot_of(int fd) { return fd >= 0 && fd < MAXFD ? fd_slot[fd] : 0; }

static void reset(struct tracked *t) { t->lo = LLONG_MAX; t->hi = 0; t->trunc_min = LLONG_MAX; }

/* Record what a new descriptor refers to (by its resolved path). */
static void track(int fd) {
    if (!watch_len || fd < 0) return;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = 0;
    short slot = 0;
    if ((size_t)n == watch_len && memcmp(path, watch, watch_len) == 0) {
        slot = -1;
    } else if ((size_t)n > watch_len + 1 && memcmp(path, watch, watch_len) == 0
               && path[watch_len] == '/' && strchr(path + watch_len + 1, '/') == NULL) {
        const char *name = path + watch_len + 1;
        size_t len = strlen(name);
        if (len > 4 && strcmp(name + len - 4, "-shm") == 0) return;
        pthread_mutex_lock(&mu);
        int k;
        for (k = 0; k < nfiles && strcmp(files[k].name, name) != 0; k++) {}
        if (k == nfiles) {
            if (nfiles == MAXFILES) die("too many files in the modelled directory");
            strcpy(files[k].name, name);
            reset(&files[k]);
            nfiles++;
        }
        pthread_mutex_unlock(&mu);
        slot = (short)(k + 1);
    } else {
        return;
    }
    /* An untracked write would silently be counted as lost: refuse instead. */
    if (fd >= MAXFD) die("file descriptor too large to model");
    fd_slot[fd] = slot;
}

static void dirty(int slot, off_t lo, off_t hi) {
    struct tracked *t = &files[slot - 1];
    if (lo < t->lo) t->lo = lo;
    if (hi > t->hi) t->hi = hi;
}

/* The file behind fd was synced: make SHADOW/<name> equal to it. */
static void sync_file(int slot, int fd) {
    struct tracked *t = &files[slot - 1];
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", shadow, t->name);
    int out = real_open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (out < 0) die("open shadow");
    struct stat st;
    if (fstat(out, &st) != 0) die("fstat shadow");
    if (t->trunc_min < st.st_size && real_ftruncate(out, t->trunc_min) != 0) die("truncate");
    int in = fd;
    char buf[65536];
    for (off_t off = t->lo; off < t->hi;) {
        size_t want = (size_t)(t->hi - off) < sizeof buf ? (size_t)(t->hi - off) : sizeof buf;
        ssize_t got = pread(in, buf, want, off);
        if (got < 0 && errno == EBADF && in == fd) {  /* opened write-only: read by name */
            snprintf(path, sizeof path, "%s/%s", watch, t->name);
            in = real_open(path, O_RDONLY | O_CLOEXEC);
            if (in < 0) die("reopen for reading");
            continue;
        }
        if (got < 0) die("pread");
        if (got == 0) break;  /* truncated below hi since */
        if (real_pwrite(out, buf, (size_t)got, off) != got) die("pwrite shadow");
        off += got;
    }
    if (in != fd) real_close(in);
    if (fstat(fd, &st) != 0) die("fstat");
    if (real_ftruncate(out, st.st_size) != 0) die("size shadow");
    real_close(out);
    reset(t);
}

/* The directory was synced: its entries are now durable. */
static void sync_dir(void) {
    char tmp[PATH_MAX], final[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s/.entries.tmp", shadow);
    snprintf(final, sizeof final, "%s/.entries", shadow);
    DIR *d = opendir(watch);
    if (d == NULL) die("opendir");
    int out = real_open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) die("open entries");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (len > 4 && strcmp(e->d_name + len - 4, "-shm") == 0) continue;
        if (real_write(out, e->d_name, len) != (ssize_t)len || real_write(out, "\n", 1) != 1)
            die("write entries");
    }
    closedir(d);
    real_close(out);
    if (rename(tmp, final) != 0) die("rename entries");
}

static int after_sync(int fd, int rc) {
    if (rc != 0) return rc;
    int slot = slot_of(fd);
    if (slot == 0) return rc;
    int saved = errno;
    pthread_mutex_lock(&mu);
    if (slot < 0) sync_dir(); else sync_file(slot, fd);
    pthread_mutex_unlock(&mu);
    errno = saved;
    return rc;
}

static mode_t mode_arg(int flags, va_list ap) {
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE ? (mode_t)va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    int fd = real_open(path, flags, m);
    track(fd);
    return fd;
}

int open64(const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    int fd = real_open64(path, flags, m);
    track(fd);
    return fd;
}

int openat(int dirfd, const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    int fd = real_openat(dirfd, path, flags, m);
    track(fd);
    return fd;
}

int openat64(int dirfd, const char *path, int flags, ...) {
    va_list ap; va_start(ap, flags); mode_t m = mode_arg(flags, ap); va_end(ap);
    int fd = real_openat64(dirfd, path, flags, m);
    track(fd);
    return fd;
}

int close(int fd) {
    if (slot_of(fd) != 0) fd_slot[fd] = 0;  /* close does not sync: the extent stays dirty */
    return real_close(fd);
}

static off_t position(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && (fl & O_APPEND)) {
        struct stat st;
        return fstat(fd, &st) == 0 ? st.st_size : 0;
    }
    return lseek(fd, 0, SEEK_CUR);
}

ssize_t write(int fd, const void *buf, size_t n) {
    int slot = slot_of(fd);
    if (slot <= 0) return real_write(fd, buf, n);
    pthread_mutex_lock(&mu);
    off_t off = position(fd);
    ssize_t r = real_write(fd, buf, n);
    if (r > 0) dirty(slot, off, off + r);
    pthread_mutex_unlock(&mu);
    return r;
}

ssize_t writev(int fd, const struct iovec *iov, int cnt) {
    int slot = slot_of(fd);
    if (slot <= 0) return real_writev(fd, iov, cnt);
    pthread_mutex_lock(&mu);
    off_t off = position(fd);
    ssize_t r = real_writev(fd, iov, cnt);
    if (r > 0) dirty(slot, off, off + r);
    pthread_mutex_unlock(&mu);
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off) {
    int slot = slot_of(fd);
    if (slot <= 0) return real_pwrite(fd, buf, n, off);
    pthread_mutex_lock(&mu);
    ssize_t r = real_pwrite(fd, buf, n, off);
    if (r > 0) dirty(slot, off, off + r);
    pthread_mutex_unlock(&mu);
    return r;
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) {
    int slot = slot_of(fd);
    if (slot <= 0) return real_pwrite64(fd, buf, n, off);
    pthread_mutex_lock(&mu);
    ssize_t r = real_pwrite64(fd, buf, n, off);
    if (r > 0) dirty(slot, off, off + r);
    pthread_mutex_unlock(&mu);
    return r;
}

static int truncated(int fd, off_t len, int rc) {
    int slot = slot_of(fd);
    if (rc == 0 && slot > 0) {
        pthread_mutex_lock(&mu);
        if (len < files[slot - 1].trunc_min) files[slot - 1].trunc_min = len;
        pthread_mutex_unlock(&mu);
    }
    return rc;
}

int ftruncate(int fd, off_t len) { return truncated(fd, len, real_ftruncate(fd, len)); }
int ftruncate64(int fd, off_t len) { return truncated(fd, len, real_ftruncate64(fd, len)); }

int fsync(int fd) {
    int slot = slot_of(fd);
    if (slot == 0) return real_fsync(fd);
    pthread_mutex_lock(&mu);  /* no write lands between the sync and the copy */
    int rc = after_sync(fd, real_fsync(fd));
    pthread_mutex_unlock(&mu);
    return rc;
}

int fdatasync(int fd) {
    int slot = slot_of(fd);
    if (slot == 0) return real_fdatasync(fd);
    pthread_mutex_lock(&mu);
    int rc = after_sync(fd, real_fdatasync(fd));
    pthread_mutex_unlock(&mu);
    return rc;
}
