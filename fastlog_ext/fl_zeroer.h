/*
 * fastlog zeroer: writes zeros into the active segment file just ahead of the
 * appends, on a thread of its own (docs/format.md, "How appends reach the file").
 *
 * Appends to a log that has not been flushed yet store their frames through
 * the segment's mapping, into pages that zeros were written to first: large
 * aligned zero writes fill the page cache in large folios whose blocks are
 * already mapped, so the stores cost a copy and a few cheap faults.  Writing
 * those zeros is about a third of an append's cost, so a helper thread writes
 * them ahead of the writer, on the other core, while the writer frames.
 *
 * The one rule that keeps records safe: zeros are only ever written at or
 * past `prepared`, records are only stored below it, and `prepared` only
 * moves up when the zeros below it are written.  The writer and the thread
 * agree on `prepared` under one mutex; only one zero write is in flight at a
 * time, and a writer that needs room past `prepared` first waits for it.
 *
 * The zeroer follows one segment at a time (a `token`: the caller's segment
 * pointer) and only ever writes to that segment's file descriptor.  Before a
 * caller closes that descriptor, or forgets the segment, it calls
 * fl_zeroer_release(), which waits for the write in flight.
 *
 * All functions are thread-safe and never call into Python: call them
 * without the GIL.
 */
#ifndef FASTLOG_ZEROER_H
#define FASTLOG_ZEROER_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Zero writes never go below this size early in a segment (see fl_zero_target). */
#define FL_ZERO_MIN_CHUNK ((size_t)64 * 1024)

typedef struct fl_zeroer {
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* signalled when work arrives, a write ends, or on stop */
    pthread_t thread;
    pid_t owner;             /* process that made the mutex and thread (see fl_zeroer_reserve) */
    int started;             /* the thread runs */
    int stop;
    const void *token;       /* the segment followed, NULL for none */
    int fd;                  /* its file */
    size_t prepared;         /* zeros are written from the records' end up to here */
    size_t goal;             /* the thread zeroes up to here */
    size_t limit;            /* the segment's size */
    size_t chunk;            /* the largest zero write (a power of two) */
    int busy;                /* a zero write of the thread is in flight */
    int error;               /* errno of the thread's last failed write; it then stops helping */
} fl_zeroer;

/* Ready to use; starts no thread yet.  0 or an errno. */
int fl_zeroer_init(fl_zeroer *z);

/* Stops and joins the thread (if any) and frees the zeroer's resources. */
void fl_zeroer_destroy(fl_zeroer *z);

/*
 * The writer is about to store records into [end, need_end) of the segment
 * `token` (file `fd`, `limit` bytes).  Makes sure that range holds written
 * zeros, writing them itself if the thread has not got there, and asks the
 * thread to zero on ahead (at most as far again as need_end, capped at
 * `ahead`; 0 = no help: everything is written synchronously).  `known`: the
 * caller knows the file holds written zeros in [end, known) already.  `chunk`:
 * a power of two, the largest zero write.
 *
 * Returns 0 with *prepared set (>= need_end), or the errno of a failed zero
 * write (then nothing was stored and the caller must not store either).
 */
int fl_zeroer_reserve(fl_zeroer *z, const void *token, int fd, size_t end, size_t need_end, size_t known,
                      size_t limit, size_t chunk, size_t ahead, size_t *prepared);

/*
 * Stop following `token` (any segment when NULL) and wait until no zero write
 * is in flight for it.  After this returns, the zeroer does not touch that
 * segment's file again unless fl_zeroer_reserve names it anew.
 */
void fl_zeroer_release(fl_zeroer *z, const void *token);

/* Write n zero bytes at off with pwritev.  0 or an errno. */
int fl_write_zeros(int fd, size_t off, size_t n);

/*
 * Where a zero write covering up to `need_end` should stop: the next multiple
 * of the chunk at or above need_end, the chunk being halved (down to
 * FL_ZERO_MIN_CHUNK) while it exceeds need_end, so the start of a segment is
 * zeroed in small steps and the rest in aligned `chunk`-sized writes.  Capped
 * at `limit`.
 */
size_t fl_zero_target(size_t need_end, size_t chunk, size_t limit);

#ifdef __cplusplus
}
#endif
#endif /* FASTLOG_ZEROER_H */
