/*
 * Record framing and segment scanning for fastlog (docs/format.md, "Record frame").
 *
 * Frame: crc u32 | length u32 | index u64 | term u64 | kind u8 | 7 reserved
 * zero bytes | payload | zero padding to a multiple of 8.  The crc covers
 * bytes [4, 32 + length) and is seeded with the previous record's crc.
 *
 * fl_decode and fl_scan read segment files that may be damaged or hostile, so
 * they check every length against the bytes that are really there before
 * touching them, and never read outside [buf, buf + size).
 *
 * A frame is checked in this order, and the first failing check decides the
 * status (the pure-Python core follows the same order so both report the same
 * code for the same bytes):
 *
 *   1. off > size                                   -> FL_ERR_TRUNCATED
 *      fewer than 32 bytes left: all zero           -> FL_ERR_ZERO
 *                                otherwise          -> FL_ERR_TRUNCATED
 *   2. the 32-byte header is all zero               -> FL_ERR_ZERO
 *   3. kind > FL_KIND_MAX or a reserved byte set    -> FL_ERR_RESERVED
 *   4. length > FL_MAX_PAYLOAD, or the whole frame
 *      (header + payload + padding) does not fit    -> FL_ERR_TRUNCATED
 *   5. index != expected index                      -> FL_ERR_INDEX
 *   6. crc mismatch (only when verifying)           -> FL_ERR_CRC
 *
 * Padding bytes are not covered by the crc and not checked: the writer always
 * zeroes them, and the next frame starts after them.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fastlog_core.h"
#include "fl_bytes.h"

uint32_t fl_encode(uint8_t *dst, uint32_t seed, uint64_t index, uint64_t term, uint8_t kind,
                   const uint8_t *payload, uint32_t len) {
    fl_store_le32(dst + 4, len);
    fl_store_le64(dst + 8, index);
    fl_store_le64(dst + 16, term);
    /* kind and the seven reserved bytes in one store: reserved bytes are zero. */
    fl_store_le64(dst + 24, (uint64_t)kind);
    if (len & (FL_REC_ALIGN - 1)) {
        /* Zero the last 8-byte word first; the payload copy then overwrites its
         * front, leaving exactly the padding zeroed. */
        memset(dst + FL_REC_HEADER_SIZE + (len & ~(uint32_t)(FL_REC_ALIGN - 1)), 0, FL_REC_ALIGN);
    }
    if (len != 0)
        memcpy(dst + FL_REC_HEADER_SIZE, payload, len);
    uint32_t crc = fl_crc32c(seed, dst + 4, (size_t)(FL_REC_HEADER_SIZE - 4) + len);
    fl_store_le32(dst, crc);
    return crc;
}

int fl_decode(const uint8_t *buf, size_t size, size_t off, uint32_t seed, uint64_t expect_index,
              int verify_crc, fl_record *out) {
    if (off > size)
        return FL_ERR_TRUNCATED;
    size_t avail = size - off;
    if (avail < FL_REC_HEADER_SIZE)
        return fl_all_zero(buf, off, size) ? FL_ERR_ZERO : FL_ERR_TRUNCATED;

    const uint8_t *p = buf + off;
    uint64_t w0 = fl_load_le64(p);      /* crc | length << 32 */
    uint64_t index = fl_load_le64(p + 8);
    uint64_t term = fl_load_le64(p + 16);
    uint64_t w3 = fl_load_le64(p + 24); /* kind | reserved << 8 */
    if ((w0 | index | term | w3) == 0)
        return FL_ERR_ZERO;
    if ((w3 >> 8) != 0 || (w3 & 0xffu) > FL_KIND_MAX)
        return FL_ERR_RESERVED;

    uint32_t length = (uint32_t)(w0 >> 32);
    /* The payload cap first, so fl_frame_size cannot wrap on 32-bit size_t. */
    if (length > FL_MAX_PAYLOAD || fl_frame_size(length) > avail)
        return FL_ERR_TRUNCATED;
    if (index != expect_index)
        return FL_ERR_INDEX;

    uint32_t crc = (uint32_t)w0;
    if (verify_crc && fl_crc32c(seed, p + 4, (size_t)(FL_REC_HEADER_SIZE - 4) + length) != crc)
        return FL_ERR_CRC;

    if (out != NULL) {
        out->index = index;
        out->term = term;
        out->length = length;
        out->crc = crc;
        out->kind = (uint8_t)w3;
        out->payload = p + FL_REC_HEADER_SIZE;
    }
    return FL_OK;
}

/*
 * offsets and terms may be NULL when the caller only wants the scan to verify
 * and count (the records are still limited to `cap`).
 */
size_t fl_scan(const uint8_t *buf, size_t size, size_t *off, uint32_t *seed, uint64_t *next_index,
               uint64_t *offsets, uint64_t *terms, size_t cap, int *status) {
    size_t o = *off;
    uint32_t s = *seed;
    uint64_t idx = *next_index;
    size_t n = 0;
    int st = FL_OK;

    while (n < cap) {
        fl_record rec;
        st = fl_decode(buf, size, o, s, idx, 1, &rec);
        if (st != FL_OK)
            break;
        if (offsets != NULL)
            offsets[n] = (uint64_t)o;
        if (terms != NULL)
            terms[n] = rec.term;
        n++;
        o += fl_frame_size(rec.length); /* fits: fl_decode checked it against size */
        s = rec.crc;
        idx++;
    }

    *off = o;
    *seed = s;
    *next_index = idx;
    *status = st;
    return n;
}

int fl_all_zero(const uint8_t *buf, size_t start, size_t end) {
    if (start >= end)
        return 1;
    const uint8_t *p = buf + start;
    size_t n = end - start;

    while (n > 0 && ((uintptr_t)p & 7u) != 0) {
        if (*p != 0)
            return 0;
        p++;
        n--;
    }
    /* 64 bytes per test: or-ing eight words keeps the loop memory-bound. */
    while (n >= 64) {
        uint64_t acc = fl_load_le64(p) | fl_load_le64(p + 8) | fl_load_le64(p + 16) | fl_load_le64(p + 24) |
                       fl_load_le64(p + 32) | fl_load_le64(p + 40) | fl_load_le64(p + 48) |
                       fl_load_le64(p + 56);
        if (acc != 0)
            return 0;
        p += 64;
        n -= 64;
    }
    while (n >= 8) {
        if (fl_load_le64(p) != 0)
            return 0;
        p += 8;
        n -= 8;
    }
    while (n > 0) {
        if (*p != 0)
            return 0;
        p++;
        n--;
    }
    return 1;
}
