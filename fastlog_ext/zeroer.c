/*
 * Zero writes ahead of the appends, on a helper thread (see fl_zeroer.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <signal.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "fl_zeroer.h"

/* The source of every zero write: small enough to stay in cache, repeated by pwritev. */
#define ZERO_SRC_SIZE ((size_t)64 * 1024)
#define ZERO_IOV 32
static const uint8_t zero_src[ZERO_SRC_SIZE];

int fl_write_zeros(int fd, size_t off, size_t n) {
    struct iovec iov[ZERO_IOV];
    while (n > 0) {
        size_t left = n;
        int cnt = 0;
        while (left > 0 && cnt < ZERO_IOV) {
            size_t len = left < ZERO_SRC_SIZE ? left : ZERO_SRC_SIZE;
            iov[cnt].iov_base = (void *)zero_src;
            iov[cnt].iov_len = len;
            left -= len;
            cnt++;
        }
        ssize_t w = pwritev(fd, iov, cnt, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (w == 0)
            return EIO;
        off += (size_t)w;
        n -= (size_t)w;
    }
    return 0;
}

size_t fl_zero_target(size_t need_end, size_t chunk, size_t limit) {
    while (chunk > FL_ZERO_MIN_CHUNK && chunk > need_end)
        chunk >>= 1;
    if (chunk == 0)
        chunk = 1;
    size_t t = need_end + (chunk - 1);
    if (t < need_end) /* overflow: only near SIZE_MAX */
        return limit;
    t -= t % chunk;
    return t < limit ? t : limit;
}

static void reset_state(fl_zeroer *z) {
    z->owner = getpid();
    z->started = 0;
    z->stop = 0;
    z->token = NULL;
    z->fd = -1;
    z->prepared = z->goal = z->limit = 0;
    z->chunk = FL_ZERO_MIN_CHUNK;
    z->busy = 0;
    z->error = 0;
    z->synced = 0;
    z->own_fd = -1;
    z->own_token = NULL;
    z->unsynced = 0;
    z->syncing = 0;
    z->sync_error = 0;
    z->fail_next_sync = 0;
    z->test_delay_us = 0;
    z->disabled = 0;
}

int fl_zeroer_init(fl_zeroer *z) {
    memset(z, 0, sizeof(*z));
    reset_state(z);
    int err = pthread_mutex_init(&z->mu, NULL);
    if (err)
        return err;
    err = pthread_cond_init(&z->cv, NULL);
    if (err) {
        pthread_mutex_destroy(&z->mu);
        return err;
    }
    return 0;
}

static int fork_reinit_failure; /* tests: see fl_zeroer_fail_fork_reinit */

void fl_zeroer_fail_fork_reinit(int err) { fork_reinit_failure = err; }

/*
 * In a child made by fork() only the forking thread exists: the helper is
 * gone, and the mutex may have been copied while it held it.  Start afresh;
 * if that fails, the zeroer is disabled in this process (the writer zeroes
 * alone, with no locking: only the busy-guarded writer calls in here).
 * Returns 1 when the mutex is now held, 0 when the zeroer is disabled.
 */
static int lock_in_this_process(fl_zeroer *z) {
    if (z->disabled)
        return 0;
    if (z->owner != getpid()) {
        int own = z->own_fd;
        reset_state(z);
        if (own >= 0)
            close(own); /* the parent's thread's description, copied by fork */
        int err = fork_reinit_failure;
        fork_reinit_failure = 0;
        if (!err)
            err = pthread_mutex_init(&z->mu, NULL);
        if (err) {
            z->disabled = 1;
            return 0;
        }
        err = pthread_cond_init(&z->cv, NULL);
        if (err) {
            pthread_mutex_destroy(&z->mu);
            z->disabled = 1;
            return 0;
        }
    }
    pthread_mutex_lock(&z->mu);
    return 1;
}

static void wait_idle(fl_zeroer *z) {
    while (z->busy)
        pthread_cond_wait(&z->cv, &z->mu);
}

/* A description of the file behind fd of the thread's own (see fl_zeroer.h), or -1. */
static int reopen_own(int fd) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int own = open(path, O_RDWR | O_CLOEXEC);
    if (own < 0) /* no /proc: a dup; the kept sync error still reaches the next flush */
        own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    return own;
}

/* Called with the mutex held; returns with it held.  Closes own_fd unless it
 * belongs to the segment followed (never while the thread syncs it).  Returns
 * 1 when it let go of the mutex meanwhile: the caller must then look at the
 * state again (a stop asked for in that window was broadcast to nobody). */
static int drop_stale_own_fd(fl_zeroer *z) {
    if (z->own_fd < 0 || z->own_token == z->token || z->syncing)
        return 0;
    int fd = z->own_fd;
    unsigned delay = z->test_delay_us;
    z->own_fd = -1;
    z->own_token = NULL;
    z->unsynced = 0;
    pthread_mutex_unlock(&z->mu);
    if (delay)
        usleep(delay);
    close(fd);
    pthread_mutex_lock(&z->mu);
    return 1;
}

static void *zeroer_main(void *arg) {
    fl_zeroer *z = (fl_zeroer *)arg;
    pthread_mutex_lock(&z->mu);
    while (!z->stop) {
        if (drop_stale_own_fd(z))
            continue;
        if (z->token == NULL || z->error || z->prepared >= z->goal) {
            if (z->unsynced && z->own_fd >= 0 && z->own_token == z->token) {
                /* All asked for is written: sync it once, with nothing held. */
                int fd = z->own_fd;
                z->unsynced = 0;
                z->syncing = 1;
                pthread_mutex_unlock(&z->mu);
                int err = fdatasync(fd) ? errno : 0;
                pthread_mutex_lock(&z->mu);
                z->syncing = 0;
                if (!err && z->fail_next_sync) {
                    err = z->fail_next_sync;
                    z->fail_next_sync = 0;
                }
                if (err && !z->sync_error)
                    z->sync_error = err;
                pthread_cond_broadcast(&z->cv);
                continue;
            }
            pthread_cond_wait(&z->cv, &z->mu);
            continue;
        }
        const void *token = z->token;
        int synced = z->synced;
        int fd = z->fd;
        size_t from = z->prepared;
        size_t to = fl_zero_target(from + 1, z->chunk, z->limit);
        if (to <= from) { /* the segment is full */
            z->goal = from;
            continue;
        }
        int own = z->own_token == token ? z->own_fd : -1;
        unsigned delay = z->test_delay_us;
        z->busy = 1; /* from here until busy is cleared, fd stays open (see release) */
        pthread_mutex_unlock(&z->mu);
        if (delay)
            usleep(delay);
        int err = 0;
        if (synced && own < 0) {
            own = reopen_own(fd);
            if (own < 0)
                err = errno;
        }
        if (!err)
            err = fl_write_zeros(synced ? own : fd, from, to - from);
        pthread_mutex_lock(&z->mu);
        z->busy = 0;
        if (synced && own >= 0 && z->own_fd != own) {
            /* Newly opened; any stale description was closed before the write. */
            z->own_fd = own;
            z->own_token = token;
        }
        /* Nobody moves `prepared` or switches segments while busy is set. */
        if (err)
            z->error = err;
        else if (z->token == token && z->prepared == from) {
            z->prepared = to;
            if (synced)
                z->unsynced = 1;
        }
        pthread_cond_broadcast(&z->cv);
    }
    pthread_mutex_unlock(&z->mu);
    return NULL;
}

static void start_thread(fl_zeroer *z) {
    /* The helper takes no signals: they belong to the application's threads. */
    sigset_t all, old;
    pthread_attr_t attr;
    int have_attr = pthread_attr_init(&attr) == 0;
    if (have_attr) /* it needs almost no stack; the default is megabytes of address space */
        pthread_attr_setstacksize(&attr, (size_t)256 * 1024);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&z->thread, have_attr ? &attr : NULL, zeroer_main, z);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (have_attr)
        pthread_attr_destroy(&attr);
    z->started = err ? -1 : 1; /* -1: could not start; the writer zeroes alone */
}

/* Called with the mutex held: follow `token` from here on, in the mode given. */
static void follow(fl_zeroer *z, const void *token, int fd, size_t end, size_t known, size_t limit, size_t chunk,
                   int synced) {
    if (z->token != token) {
        wait_idle(z);
        z->token = token;
        z->fd = fd;
        z->prepared = end;
        z->goal = 0;
        z->error = 0;
    }
    z->synced = synced;
    z->limit = limit;
    z->chunk = chunk ? chunk : FL_ZERO_MIN_CHUNK;
    if (known < end)
        known = end;
    if (known > z->prepared) {
        /* Blocks the caller knows are written (or records past what we saw): never zero below them. */
        wait_idle(z);
        if (known > z->prepared)
            z->prepared = known;
    }
}

/* Called with the mutex held: let the thread work towards `goal`. */
static void ask_thread(fl_zeroer *z, size_t goal) {
    if (z->started < 0 || z->error)
        return;
    if (goal > z->goal)
        z->goal = goal;
    if (z->goal > z->prepared) {
        if (!z->started)
            start_thread(z);
        pthread_cond_broadcast(&z->cv);
    }
}

int fl_zeroer_reserve(fl_zeroer *z, const void *token, int fd, size_t end, size_t need_end, size_t known,
                      size_t limit, size_t chunk, size_t ahead, size_t *prepared) {
    if (need_end > limit)
        need_end = limit;
    if (!lock_in_this_process(z)) {
        /* Disabled (after a failed re-initialisation in a fork child): zero here. */
        size_t from = known > end ? known : end;
        if (need_end > from) {
            size_t to = fl_zero_target(need_end, chunk ? chunk : FL_ZERO_MIN_CHUNK, limit);
            int err = fl_write_zeros(fd, from, to - from);
            if (err)
                return err;
            from = to;
        }
        *prepared = from;
        return 0;
    }
    follow(z, token, fd, end, known, limit, chunk, 0);
    while (need_end > z->prepared && z->busy)
        pthread_cond_wait(&z->cv, &z->mu); /* the write in flight may cover it */
    if (need_end > z->prepared) {
        /* The helper is idle and behind: write them here (it cannot start meanwhile). */
        size_t to = fl_zero_target(need_end, z->chunk, limit);
        int err = fl_write_zeros(fd, z->prepared, to - z->prepared);
        if (err) {
            pthread_mutex_unlock(&z->mu);
            return err;
        }
        z->prepared = to;
    }
    *prepared = z->prepared;
    if (ahead) {
        /* Ahead by at most what is written already: a flush soon after a small
         * start then syncs few zeros. */
        size_t goal = need_end + (need_end < ahead ? need_end : ahead);
        if (goal > limit || goal < need_end)
            goal = limit;
        ask_thread(z, goal);
    }
    pthread_mutex_unlock(&z->mu);
    return 0;
}

size_t fl_zeroer_advance(fl_zeroer *z, const void *token, int fd, size_t end, size_t new_end, size_t known,
                         size_t limit, size_t chunk, size_t ahead) {
    if (new_end > limit)
        new_end = limit;
    if (!lock_in_this_process(z))
        return new_end > known ? new_end : known; /* disabled: no zeros ahead at all */
    follow(z, token, fd, end, known, limit, chunk, 1);
    if (new_end > z->prepared) {
        /* The records pass the watermark: no zero write may be in flight there. */
        wait_idle(z);
        if (new_end > z->prepared)
            z->prepared = new_end;
    }
    size_t mark = z->prepared;
    if (ahead && mark - new_end < ahead / 2) {
        size_t goal = new_end + ahead;
        if (goal > limit || goal < new_end)
            goal = limit;
        ask_thread(z, goal);
    }
    pthread_mutex_unlock(&z->mu);
    return mark;
}

int fl_zeroer_sync_error(fl_zeroer *z) {
    if (!lock_in_this_process(z))
        return 0;
    int err = z->sync_error;
    pthread_mutex_unlock(&z->mu);
    return err;
}

void fl_zeroer_fail_next_sync(fl_zeroer *z, int err) {
    if (!lock_in_this_process(z))
        return;
    z->fail_next_sync = err;
    pthread_mutex_unlock(&z->mu);
}

void fl_zeroer_delay_writes(fl_zeroer *z, unsigned usec) {
    if (!lock_in_this_process(z))
        return;
    z->test_delay_us = usec;
    pthread_mutex_unlock(&z->mu);
}

void fl_zeroer_release(fl_zeroer *z, const void *token) {
    if (!lock_in_this_process(z))
        return;
    if (token == NULL || z->token == token) {
        z->token = NULL;
        z->fd = -1;
        z->goal = 0;
        wait_idle(z);
        pthread_cond_broadcast(&z->cv); /* the thread lets go of its own description */
    }
    pthread_mutex_unlock(&z->mu);
}

void fl_zeroer_destroy(fl_zeroer *z) {
    if (!lock_in_this_process(z)) {
        if (z->own_fd >= 0)
            close(z->own_fd);
        z->own_fd = -1;
        return;
    }
    z->stop = 1;
    z->token = NULL;
    pthread_cond_broadcast(&z->cv);
    int started = z->started == 1;
    pthread_mutex_unlock(&z->mu);
    if (started)
        pthread_join(z->thread, NULL); /* at most one zero write or one sync away */
    if (z->own_fd >= 0)
        close(z->own_fd);
    z->own_fd = -1;
    pthread_mutex_destroy(&z->mu);
    pthread_cond_destroy(&z->cv);
}
