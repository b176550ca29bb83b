/*
 * Frame batches: checking frames that come from another log and copying them
 * into this one (docs/format.md, "Frame batches").
 *
 * A follower receives records as the leader stored them.  They are hostile
 * input until checked: every length is checked against the bytes that are
 * really there before anything is read or copied, and the walk never reads
 * outside [buf, buf + size).  Each frame is checked in this order, the first
 * failing check deciding the status (the pure-Python core, fastlog/_pycore.py
 * `_check_frames`, follows the same order, so both report the same error for
 * the same bytes):
 *
 *   1. fewer than 32 bytes left                       -> FL_FRAMES_TRUNCATED
 *   2. kind > FL_KIND_MAX or a reserved byte set      -> FL_FRAMES_RESERVED
 *   3. length above the receiver's max_payload        -> FL_FRAMES_TOO_LARGE
 *   4. the whole frame does not fit in what is left   -> FL_FRAMES_TRUNCATED
 *   5. first frame with index 0                       -> FL_FRAMES_INDEX_ZERO
 *      a later frame not at the previous index + 1    -> FL_FRAMES_INDEX
 *      a later frame with a lower term                -> FL_FRAMES_TERM
 *   6. crc fails on the chain from the batch's seed   -> FL_FRAMES_CRC
 *   7. padding after the payload not zero             -> FL_FRAMES_PADDING
 *
 * Copying is the hot path of replication, so a frame is checked and copied in
 * one visit: the frame is copied first and then checked where it landed (the
 * bytes are in L1 by then, and a source buffer changed by another thread
 * meanwhile can never yield a written frame that was not the one verified).
 * When the receiver's chain equals the batch's chain (a follower whose log
 * matches the leader's, the common case), the verified crc already is the
 * crc on the receiver's chain and each frame costs one crc pass and one copy.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fastlog_core.h"
#include "fl_bytes.h"

void fl_frames_begin(fl_frame_walk *w, uint32_t seed, uint32_t max_payload) {
    memset(w, 0, sizeof(*w));
    w->seed = seed;
    w->max_payload = max_payload;
}

/* The header checks (1-5) of the frame at w->pos; on FL_FRAMES_OK *length and
 * *fs tell its size.  Records the header fields in w->at_* either way. */
static int check_header(const uint8_t *buf, size_t size, fl_frame_walk *w, uint32_t *length, size_t *fs) {
    size_t avail = size - w->pos;
    if (avail < FL_REC_HEADER_SIZE)
        return FL_FRAMES_TRUNCATED;
    const uint8_t *p = buf + w->pos;
    uint32_t len = fl_load_le32(p + 4);
    uint64_t index = fl_load_le64(p + 8);
    uint64_t term = fl_load_le64(p + 16);
    uint64_t kind_word = fl_load_le64(p + 24); /* kind | reserved << 8 */
    w->at_index = index;
    w->at_term = term;
    w->at_length = len;
    if (kind_word > FL_KIND_MAX)
        return FL_FRAMES_RESERVED;
    if (len > w->max_payload || len > FL_MAX_PAYLOAD)
        return FL_FRAMES_TOO_LARGE;
    size_t size_of_frame = fl_frame_size(len);
    if (size_of_frame > avail)
        return FL_FRAMES_TRUNCATED;
    if (w->count == 0) {
        if (index == 0)
            return FL_FRAMES_INDEX_ZERO;
    } else if (index != w->next_index || w->next_index == 0) {
        return FL_FRAMES_INDEX;
    } else if (term < w->last_term) {
        return FL_FRAMES_TERM;
    }
    *length = len;
    *fs = size_of_frame;
    return FL_FRAMES_OK;
}

/* Checks 6 and 7 on a frame at f (its header already checked). */
static int check_body(const uint8_t *f, uint32_t len, size_t fs, uint32_t seed, uint32_t *crc) {
    uint32_t c = fl_crc32c(seed, f + 4, (size_t)(FL_REC_HEADER_SIZE - 4) + len);
    if (c != fl_load_le32(f))
        return FL_FRAMES_CRC;
    if (!fl_all_zero(f, FL_REC_HEADER_SIZE + (size_t)len, fs))
        return FL_FRAMES_PADDING;
    *crc = c;
    return FL_FRAMES_OK;
}

/* Take the checked frame at w->pos (crc `crc`, `fs` bytes) into the walk. */
static void accept(fl_frame_walk *w, uint32_t crc, size_t fs) {
    if (w->count == 0) {
        w->first_index = w->at_index;
        w->first_term = w->at_term;
    }
    w->seed = crc;
    w->last_term = w->at_term;
    w->next_index = w->at_index + 1; /* wraps to 0 after the largest index: nothing may follow */
    w->count++;
    w->pos += fs;
}

int fl_frames_check(const uint8_t *buf, size_t size, fl_frame_walk *w) {
    while (w->pos < size) {
        uint32_t len = 0, crc = 0;
        size_t fs = 0;
        int rc = check_header(buf, size, w, &len, &fs);
        if (rc == FL_FRAMES_OK)
            rc = check_body(buf + w->pos, len, fs, w->seed, &crc);
        if (rc != FL_FRAMES_OK)
            return rc;
        accept(w, crc, fs);
    }
    return w->count == 0 ? FL_FRAMES_EMPTY : FL_FRAMES_OK;
}

int fl_frames_copy(const uint8_t *buf, size_t size, fl_frame_walk *w, int verify, fl_frame_sink *sink) {
    size_t copied = 0; /* bytes of the current frame already in dst */
    int rc = FL_FRAMES_OK;
    while (w->pos < size) {
        uint32_t len = 0, crc = 0, stored;
        size_t fs = 0;
        const uint8_t *src = buf + w->pos;
        if (sink->n >= sink->cap)
            return FL_FRAMES_NO_SLOTS;
        if (verify) {
            rc = check_header(buf, size, w, &len, &fs);
            if (rc != FL_FRAMES_OK)
                goto fail;
        } else {
            /* Checked before: only what keeps the copy inside both buffers. */
            if (size - w->pos < FL_REC_HEADER_SIZE) {
                rc = FL_FRAMES_TRUNCATED;
                goto fail;
            }
            len = fl_load_le32(src + 4);
            if (len > FL_MAX_PAYLOAD || fl_frame_size(len) > size - w->pos) {
                rc = FL_FRAMES_TRUNCATED;
                goto fail;
            }
            fs = fl_frame_size(len);
            w->at_index = fl_load_le64(src + 8);
            w->at_term = fl_load_le64(src + 16);
            w->at_length = len;
        }
        if (fs > sink->room - sink->written)
            return FL_FRAMES_NO_ROOM;

        uint8_t *d = sink->dst + sink->written;
        memcpy(d, src, fs);
        copied = fs;
        stored = fl_load_le32(d);
        if (verify) {
            /* The header as copied must be the one checked above. */
            if (fl_load_le32(d + 4) != len || fl_load_le64(d + 8) != w->at_index ||
                fl_load_le64(d + 16) != w->at_term || fl_load_le64(d + 24) > FL_KIND_MAX) {
                rc = FL_FRAMES_CRC;
                goto fail;
            }
            rc = check_body(d, len, fs, w->seed, &crc);
            if (rc != FL_FRAMES_OK)
                goto fail;
        }
        uint32_t mine;
        if (verify && sink->chain == w->seed) {
            mine = crc; /* same seed, same bytes: the crc the receiver would compute */
        } else {
            mine = fl_crc32c(sink->chain, d + 4, (size_t)(FL_REC_HEADER_SIZE - 4) + len);
            fl_store_le32(d, mine);
        }
        sink->offsets[sink->n] = sink->file_off + sink->written;
        sink->terms[sink->n] = w->at_term;
        sink->n++;
        sink->written += fs;
        sink->chain = mine;
        copied = 0;
        accept(w, stored, fs);
    }
    return FL_FRAMES_OK;

fail:
    /* All or nothing: what this sink wrote goes back to zeros, as it was. */
    memset(sink->dst, 0, sink->written + copied);
    return rc;
}
