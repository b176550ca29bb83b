/*
 * Zero writes ahead of the appends, on a helper thread (see fl_zeroer.h).
 */
#define _GNU_SOURCE
#include <errno.h>
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

/*
 * In a child made by fork() only the forking thread exists: the helper is
 * gone, and the mutex may have been copied while it held it.  Start afresh.
 */
static void lock_in_this_process(fl_zeroer *z) {
    if (z->owner != getpid()) {
        reset_state(z);
        pthread_mutex_init(&z->mu, NULL);
        pthread_cond_init(&z->cv, NULL);
    }
    pthread_mutex_lock(&z->mu);
}

static void wait_idle(fl_zeroer *z) {
    while (z->busy)
        pthread_cond_wait(&z->cv, &z->mu);
}

static void *zeroer_main(void *arg) {
    fl_zeroer *z = (fl_zeroer *)arg;
    pthread_mutex_lock(&z->mu);
    while (!z->stop) {
        if (z->token == NULL || z->error || z->prepared >= z->goal) {
            pthread_cond_wait(&z->cv, &z->mu);
            continue;
        }
        const void *token = z->token;
        int fd = z->fd;
        size_t from = z->prepared;
        size_t to = fl_zero_target(from + 1, z->chunk, z->limit);
        if (to <= from) { /* the segment is full */
            z->goal = from;
            continue;
        }
        z->busy = 1;
        pthread_mutex_unlock(&z->mu);
        int err = fl_write_zeros(fd, from, to - from);
        pthread_mutex_lock(&z->mu);
        z->busy = 0;
        /* Nobody moves `prepared` or switches segments while busy is set. */
        if (err)
            z->error = err;
        else if (z->token == token && z->prepared == from)
            z->prepared = to;
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

int fl_zeroer_reserve(fl_zeroer *z, const void *token, int fd, size_t end, size_t need_end, size_t known,
                      size_t limit, size_t chunk, size_t ahead, size_t *prepared) {
    if (need_end > limit)
        need_end = limit;
    lock_in_this_process(z);
    if (z->token != token) {
        wait_idle(z);
        z->token = token;
        z->fd = fd;
        z->prepared = end;
        z->goal = 0;
        z->error = 0;
    }
    z->limit = limit;
    z->chunk = chunk ? chunk : FL_ZERO_MIN_CHUNK;
    if (known < end)
        known = end;
    if (known > z->prepared) {
        /* Zeros the caller knows of (or records past what we saw): never zero below them. */
        wait_idle(z);
        if (known > z->prepared)
            z->prepared = known;
    }
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
    if (ahead && z->started >= 0 && !z->error) {
        /* Ahead by at most what is written already: a flush soon after a small
         * start then syncs few zeros. */
        size_t goal = need_end + (need_end < ahead ? need_end : ahead);
        if (goal > limit || goal < need_end)
            goal = limit;
        if (goal > z->goal)
            z->goal = goal;
        if (z->goal > z->prepared) {
            if (!z->started)
                start_thread(z);
            pthread_cond_broadcast(&z->cv);
        }
    }
    pthread_mutex_unlock(&z->mu);
    return 0;
}

void fl_zeroer_release(fl_zeroer *z, const void *token) {
    lock_in_this_process(z);
    if (token == NULL || z->token == token) {
        z->token = NULL;
        z->fd = -1;
        z->goal = 0;
        wait_idle(z);
    }
    pthread_mutex_unlock(&z->mu);
}

void fl_zeroer_destroy(fl_zeroer *z) {
    lock_in_this_process(z);
    z->stop = 1;
    z->token = NULL;
    pthread_cond_broadcast(&z->cv);
    int started = z->started == 1;
    pthread_mutex_unlock(&z->mu);
    if (started)
        pthread_join(z->thread, NULL);
    pthread_mutex_destroy(&z->mu);
    pthread_cond_destroy(&z->cv);
}
