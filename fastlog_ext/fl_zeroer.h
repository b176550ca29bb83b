/*
 * fastlog zeroer: writes zeros into the active segment file just ahead of the
 * appends, on a thread of its own (docs/format.md, "How appends reach the file").
 * One mechanism, two modes, chosen by the writer at each call:
 *
 * - Prepared (fl_zeroer_reserve), before a log's first flush.  Appends store
 *   their frames through the segment's mapping, into pages that zeros were
 *   written to first: large aligned zero writes fill the page cache in large
 *   folios whose blocks are already mapped, so the stores cost a copy and a
 *   few cheap faults.  The zeros are left unsynced (the next flush syncs
 *   them with the records).
 *
 * - Synced (fl_zeroer_advance), once the log is being flushed.  Appends
 *   write their frames with pwrite; the thread keeps a window past them
 *   written with zeros AND fdatasynced, so the extents a later fsync meets are
 *   already "written" and need no metadata update.  It writes and syncs
 *   through a file description of its own (reopened via /proc/self/fd/N):
 *   Linux reports a writeback error once to each open file description, so
 *   an error its sync meets still reaches the writer's own fsync, and it is
 *   also kept (fl_zeroer_sync_error) for the writer's next flush to report.
 *
 * The one rule that keeps records safe, in both modes: zeros are only ever
 * written at or past `prepared`, records are only written below it, and
 * `prepared` only moves while no zero write is in flight.  The thread raises
 * it when its zeros below it are written; a writer that needs to write
 * records past it first waits for the zero write in flight, then raises it
 * (prepared mode: by writing the missing zeros; synced mode: to the end of
 * its records, which are about to be written there).
 *
 * The thread never holds the mutex across I/O: it marks a write in flight
 * (`busy`), unlocks, writes, and locks again.  So nothing that closes a
 * segment, frees the zeroer or shuts the interpreter down ever waits on more
 * than one zero write (and the thread never needs the GIL).  A sync in flight
 * is waited for by nobody but fl_zeroer_destroy.
 *
 * The zeroer follows one segment at a time (a `token`: the caller's segment
 * pointer) and only ever writes to that segment's file.  Before a caller
 * closes that file's descriptor, or forgets the segment, it calls
 * fl_zeroer_release(), which waits for the write in flight.
 *
 * After fork() only the forking thread exists in the child: the first call
 * there starts the zeroer afresh (no thread until work comes); if its mutex
 * or condition cannot be made anew, the zeroer stays disabled in that
 * process and the writer writes every zero itself.
 *
 * All functions are thread-safe and never call into Python: call them
 * without the GIL when they may wait.
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
    int synced;              /* the mode asked for last: 1 synced, 0 prepared */
    int own_fd;              /* synced mode: the thread's own description of a followed file */
    const void *own_token;   /* the segment own_fd belongs to */
    int unsynced;            /* zeros were written through own_fd since its last sync */
    int syncing;             /* the thread is inside fdatasync(own_fd) */
    int sync_error;          /* errno of a failed sync of the thread; kept for good */
    int fail_next_sync;      /* tests only: report this errno from the next sync */
    unsigned test_delay_us;  /* tests only: the thread sleeps this long before each zero write,
                              * and before closing a description it no longer needs */
    int disabled;            /* a fork child could not make the mutex anew: no thread, no locking */
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
 * Synced mode.  The writer is about to write records with pwrite (or, below
 * zeros already written, store them) into [end, new_end) of the segment
 * `token` (file `fd`, `limit` bytes).  Waits for a zero write in flight only
 * when new_end passes the watermark, raises the watermark to at least
 * new_end, and asks the thread to keep `ahead` bytes past new_end written
 * with zeros and synced (topped up once less than half is left; 0: no help,
 * nothing is zeroed).  `known`: the file holds written blocks in [end, known)
 * already.  `chunk`: a power of two, the largest zero write.
 *
 * Returns the watermark (>= new_end).  Never fails: a failed zero write only
 * stops the help; a failed sync is kept for fl_zeroer_sync_error.
 */
size_t fl_zeroer_advance(fl_zeroer *z, const void *token, int fd, size_t end, size_t new_end, size_t known,
                         size_t limit, size_t chunk, size_t ahead);

/* The errno of the first failed sync of the thread (synced mode), 0 if none. */
int fl_zeroer_sync_error(fl_zeroer *z);

/* Tests: the thread's next sync reports `err` (after syncing for real). */
void fl_zeroer_fail_next_sync(fl_zeroer *z, int err);

/* Tests: the thread sleeps `usec` after taking each zero write and before
 * writing, so a writer that did not wait for it would overtake it; and before
 * it closes a description it no longer needs, with the mutex let go, so a
 * stop asked for meanwhile must still be seen. */
void fl_zeroer_delay_writes(fl_zeroer *z, unsigned usec);

/* Tests: the next re-initialisation after fork() fails with `err` (0: none). */
void fl_zeroer_fail_fork_reinit(int err);

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
