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

#ifdef __cplusplus
}
#endif
#endif /* FASTLOG_CORE_H */
