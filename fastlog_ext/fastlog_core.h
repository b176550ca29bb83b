/*
 * fastlog C core: CRC-32C, record framing and segment scanning.
 *
 * This is the byte work only: no Python, no allocation, no I/O.  The format
 * is described in docs/format.md; keep the two in step.
 */
#ifndef FASTLOG_CORE_H
#define FASTLOG_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FL_FORMAT_VERSION 1u

/* Segment header (see docs/format.md, "Segment header"). */
#define FL_SEG_MAGIC "FLOGSEG1"
#define FL_SEG_HEADER_SIZE 64u     /* bytes of header proper */
#define FL_SEG_DATA_START 4096u    /* first record offset: header has its own page */

/* Record frame: 32-byte header, payload, zero padding to a multiple of 8. */
#define FL_REC_HEADER_SIZE 32u
#define FL_REC_ALIGN 8u
#define FL_KIND_MAX 2u             /* NOOP=0, COMMAND=1, CONFIG=2 */
#define FL_MAX_PAYLOAD 0x7fffffffu /* hard cap of the format; engines set lower limits */

/* Size of a framed record holding `payload_len` bytes. */
static inline size_t fl_frame_size(uint32_t payload_len) {
    return FL_REC_HEADER_SIZE + (((size_t)payload_len + (FL_REC_ALIGN - 1)) & ~(size_t)(FL_REC_ALIGN - 1));
}

/* ---- CRC-32C (Castagnoli) -------------------------------------------------
 * fl_crc32c(0, "123456789", 9) == 0xE3069283.
 * Chaining: fl_crc32c(fl_crc32c(0, a, na), b, nb) == fl_crc32c(0, a||b, na+nb).
 * Uses the SSE4.2 crc32 instruction when the CPU has it (checked at run time),
 * a slicing table otherwise.
 */
uint32_t fl_crc32c(uint32_t crc, const void *data, size_t len);
uint32_t fl_crc32c_portable(uint32_t crc, const void *data, size_t len); /* table path, for tests */
int fl_crc32c_hw_available(void);                                        /* 1 if the hardware path is used */
/* Three checksums of three buffers of the same length at once:
 * out[i] = fl_crc32c(crc[i], data[i], len), faster than three calls for
 * record-sized buffers (the instruction's latency is hidden). */
void fl_crc32c_x3(const uint32_t crc[3], const uint8_t *const data[3], size_t len, uint32_t out[3]);

/* ---- Records --------------------------------------------------------------- */

typedef struct {
    uint64_t index;
    uint64_t term;
    uint32_t length;   /* payload length */
    uint32_t crc;      /* stored (chained) checksum */
    uint8_t kind;
    const uint8_t *payload; /* points into the buffer */
} fl_record;

/*
 * Write one framed record at dst (which must have fl_frame_size(len) bytes).
 * `seed` is the previous record's crc (or the segment's prev_crc for the first
 * record).  Returns the new record's crc, which seeds the next record.
 */
uint32_t fl_encode(uint8_t *dst, uint32_t seed, uint64_t index, uint64_t term, uint8_t kind,
                   const uint8_t *payload, uint32_t len);

/* Result codes of fl_decode / fl_scan. */
enum {
    FL_OK = 0,
    FL_ERR_TRUNCATED = 1,  /* frame runs past the end of the buffer */
    FL_ERR_RESERVED = 2,   /* reserved bytes not zero, or kind unknown */
    FL_ERR_INDEX = 3,      /* index is not the expected one */
    FL_ERR_CRC = 4,        /* checksum mismatch */
    FL_ERR_ZERO = 5        /* frame header is all zero: the clean end of the data */
};

/*
 * Decode and verify the record at buf[off] against `seed` and the expected
 * index.  On FL_OK fills *out (payload points into buf).  Never reads outside
 * [buf, buf+size).  `verify_crc` = 0 skips the checksum (used by trusted reads).
 */
int fl_decode(const uint8_t *buf, size_t size, size_t off, uint32_t seed, uint64_t expect_index,
              int verify_crc, fl_record *out);

/*
 * Scan consecutive records starting at `*off`, verifying each one, and store
 * the offset and term of each valid record in offsets[]/terms[] (at most `cap`).
 * Advances *off, *seed and *next_index past every valid record.  Returns the
 * number of records stored.  *status receives FL_OK when it stopped because
 * `cap` was reached (call again with more room), or the FL_ERR_* code of the
 * frame at *off that ended the scan (FL_ERR_ZERO for a clean end; a frame that
 * would not fit in the buffer at all, i.e. off + 32 > size, gives FL_ERR_ZERO
 * if the remaining bytes are zero and FL_ERR_TRUNCATED otherwise).
 */
size_t fl_scan(const uint8_t *buf, size_t size, size_t *off, uint32_t *seed, uint64_t *next_index,
               uint64_t *offsets, uint64_t *terms, size_t cap, int *status);

/* 1 if buf[start, end) is all zero bytes. */
int fl_all_zero(const uint8_t *buf, size_t start, size_t end);

/* ---- Frame batches (docs/format.md, "Frame batches") -----------------------
 * A batch is a 16-byte header (magic, version, chain seed, reserved) followed
 * by frames exactly as stored in a segment.  fastlog_ext/frames.c checks the
 * frames of a batch from another log and copies them into this one,
 * re-chained onto the receiver's crc chain.
 */
#define FL_BATCH_MAGIC "FLFR"
#define FL_BATCH_VERSION 1u
#define FL_BATCH_HEADER_SIZE 16u

/* Why a frame of a batch was refused (or why a copy stopped short).  The
 * checks run in this order and the first failing one decides. */
enum {
    FL_FRAMES_OK = 0,
    FL_FRAMES_TRUNCATED = 1, /* fewer than 32 bytes left, or the frame runs past the end */
    FL_FRAMES_RESERVED = 2,  /* kind > FL_KIND_MAX or a reserved byte set */
    FL_FRAMES_TOO_LARGE = 3, /* payload longer than the receiver's limit */
    FL_FRAMES_INDEX_ZERO = 4,/* the first frame has index 0 */
    FL_FRAMES_INDEX = 5,     /* index is not the previous frame's + 1 */
    FL_FRAMES_TERM = 6,      /* term below the previous frame's */
    FL_FRAMES_CRC = 7,       /* crc fails on the batch's chain */
    FL_FRAMES_PADDING = 8,   /* padding after the payload not zero */
    FL_FRAMES_EMPTY = 9,     /* no frame at all */
    /* not errors: where fl_frames_copy stopped */
    FL_FRAMES_NO_ROOM = 16,  /* the next frame does not fit in the destination */
    FL_FRAMES_NO_SLOTS = 17, /* the index arrays are full: give more and call again */
    FL_FRAMES_OTHER_CHAIN = 18 /* a check in place (no dst) for a receiver on another chain */
};

/* Progress of a walk over the frames of a batch, on the sender's chain. */
typedef struct {
    size_t pos;           /* byte offset of the next frame */
    size_t count;         /* frames accepted so far */
    uint32_t seed;        /* crc of the last accepted frame (the batch seed before the first) */
    uint32_t max_payload; /* the receiver's payload limit */
    uint64_t next_index;  /* index the next frame must carry (0: first frame, any >= 1) */
    uint64_t first_index, first_term, last_term;
    /* the header fields of the frame that ended the walk, for error messages */
    uint64_t at_index, at_term;
    uint32_t at_length;
} fl_frame_walk;

/* Where fl_frames_copy writes: frames go to dst[written..room), the frame at
 * dst[k] lands at file offset file_off + k, and each frame written gets its
 * offset and term in offsets[n]/terms[n] (n < cap). */
typedef struct {
    uint8_t *dst;
    size_t room;
    size_t written;       /* bytes written so far (a frame boundary) */
    uint64_t file_off;
    uint32_t chain;       /* the receiver's chain: crc of its last record */
    uint64_t *offsets, *terms;
    size_t cap, n;
} fl_frame_sink;

/* Start a walk over a batch whose first frame is chained from `seed`. */
void fl_frames_begin(fl_frame_walk *w, uint32_t seed, uint32_t max_payload);

/*
 * Check every frame from w->pos to the end of buf[0, size) without copying.
 * Returns FL_FRAMES_OK with w->pos == size, or the code of the first bad frame
 * (w->pos at it, w->count its number, at_* its header fields).  A walk that
 * accepted no frame at all returns FL_FRAMES_EMPTY.  Never reads outside buf.
 */
int fl_frames_check(const uint8_t *buf, size_t size, fl_frame_walk *w);

/*
 * Copy frames from w->pos into the sink while each whole frame fits, giving
 * each the crc it has on the receiver's chain (sink->chain).  With `verify`
 * every frame is checked as by fl_frames_check -- on the bytes as copied, so
 * what is verified is what is written -- and a bad frame makes the call zero
 * dst[0, written + that frame) and return its code: a sink is all or nothing.
 * Without `verify` the frames must have passed fl_frames_check; only their
 * lengths are checked (so memory stays safe), and every crc is recomputed.
 * Returns FL_FRAMES_OK (all copied), FL_FRAMES_NO_ROOM, FL_FRAMES_NO_SLOTS,
 * or an error code.
 *
 * A sink with dst NULL checks the frames where they are (verify only) and
 * records them in the index as if copied, for a caller that writes them
 * straight from buf: only for a receiver on the batch's chain (sink->chain
 * equal to the walk's seed, else FL_FRAMES_OTHER_CHAIN), whose crcs are then
 * the sent ones, and only from a buffer nobody can change meanwhile.
 */
int fl_frames_copy(const uint8_t *buf, size_t size, fl_frame_walk *w, int verify, fl_frame_sink *sink);

#ifdef __cplusplus
}
#endif
#endif /* FASTLOG_CORE_H */
