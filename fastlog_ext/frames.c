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

/* Gives the frame copied to d its crc on the receiver's chain (`crc` is its
 * verified crc on the sender's chain, or 0 when not verified) and records it. */
static void land(fl_frame_walk *w, fl_frame_sink *sink, uint8_t *d, uint32_t len, size_t fs, int verified,
                 uint32_t crc, uint32_t stored) {
    uint32_t mine;
    if (verified && sink->chain == w->seed) {
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
    accept(w, stored, fs);
}

/* Frames checked and copied together, so their crcs run side by side. */
#define GROUP 3

/*
 * The checked copy works on groups of up to three frames: their headers are
 * checked (on a copy of the walk, as if the frames before them were good) and
 * the frames copied, then their crcs are computed at once -- each frame's crc
 * is seeded with the crc stored in the frame before it, which the check
 * requires anyway, so the three are independent -- and finally each frame is
 * judged in order.  A fault is reported for the first frame that has one,
 * with the walk at that frame, exactly as a frame-by-frame walk would.
 */
static int copy_checked(const uint8_t *buf, size_t size, fl_frame_walk *w, fl_frame_sink *sink) {
    size_t pending = 0; /* bytes copied past sink->written and not yet kept */
    int rc = FL_FRAMES_OK;
    /* No destination: the frames are checked where they are, for a caller
     * that writes them from there (only right when both chains agree). */
    int in_place = sink->dst == NULL;
    if (in_place && sink->chain != w->seed)
        return FL_FRAMES_OTHER_CHAIN;
    while (w->pos < size) {
        fl_frame_walk ahead = *w;
        uint32_t len[GROUP], stored[GROUP], crc[GROUP], seed[GROUP];
        size_t fs[GROUP];
        uint64_t index[GROUP], term[GROUP];
        uint8_t *d[GROUP];
        int k = 0, stop = FL_FRAMES_OK;
        pending = 0;
        while (k < GROUP && ahead.pos < size) {
            if (sink->n + (size_t)k >= sink->cap) {
                stop = FL_FRAMES_NO_SLOTS;
                break;
            }
            stop = check_header(buf, size, &ahead, &len[k], &fs[k]);
            if (stop != FL_FRAMES_OK)
                break;
            if (fs[k] > sink->room - sink->written - pending) {
                stop = FL_FRAMES_NO_ROOM;
                break;
            }
            if (in_place) {
                d[k] = (uint8_t *)(uintptr_t)(buf + ahead.pos); /* only read: see land */
            } else {
                d[k] = sink->dst + sink->written + pending;
                memcpy(d[k], buf + ahead.pos, fs[k]);
            }
            pending += fs[k];
            index[k] = ahead.at_index;
            term[k] = ahead.at_term;
            stored[k] = fl_load_le32(d[k]);
            seed[k] = ahead.seed;
            accept(&ahead, stored[k], fs[k]);
            k++;
        }
        if (k == GROUP && len[0] == len[1] && len[1] == len[2]) {
            const uint8_t *const at[GROUP] = {d[0] + 4, d[1] + 4, d[2] + 4};
            fl_crc32c_x3(seed, at, (size_t)(FL_REC_HEADER_SIZE - 4) + len[0], crc);
        } else {
            for (int j = 0; j < k; j++)
                crc[j] = fl_crc32c(seed[j], d[j] + 4, (size_t)(FL_REC_HEADER_SIZE - 4) + len[j]);
        }
        for (int j = 0; j < k; j++) {
            w->at_index = index[j];
            w->at_term = term[j];
            w->at_length = len[j];
            /* The header as copied must be the one checked (another thread
             * may change the sender's buffer meanwhile). */
            if (fl_load_le32(d[j] + 4) != len[j] || fl_load_le64(d[j] + 8) != index[j] ||
                fl_load_le64(d[j] + 16) != term[j] || fl_load_le64(d[j] + 24) > FL_KIND_MAX ||
                crc[j] != stored[j]) {
                rc = FL_FRAMES_CRC;
                goto fail;
            }
            if (!fl_all_zero(d[j], FL_REC_HEADER_SIZE + (size_t)len[j], fs[j])) {
                rc = FL_FRAMES_PADDING;
                goto fail;
            }
            pending -= fs[j];
            land(w, sink, d[j], len[j], fs[j], 1, crc[j], stored[j]);
        }
        if (stop == FL_FRAMES_NO_SLOTS || stop == FL_FRAMES_NO_ROOM)
            return stop;
        if (stop != FL_FRAMES_OK) {
            /* The frame after the good ones failed its header checks. */
            w->at_index = ahead.at_index;
            w->at_term = ahead.at_term;
            w->at_length = ahead.at_length;
            rc = stop;
            goto fail;
        }
    }
    return FL_FRAMES_OK;

fail:
    /* All or nothing: what this sink wrote goes back to zeros, as it was. */
    if (!in_place)
        memset(sink->dst, 0, sink->written + pending);
    return rc;
}

/* The copy of frames that passed fl_frames_check before: every crc is
 * recomputed, and only what keeps the copy inside both buffers is checked. */
static int copy_trusted(const uint8_t *buf, size_t size, fl_frame_walk *w, fl_frame_sink *sink) {
    while (w->pos < size) {
        const uint8_t *src = buf + w->pos;
        if (sink->n >= sink->cap)
            return FL_FRAMES_NO_SLOTS;
        if (size - w->pos < FL_REC_HEADER_SIZE)
            goto fail;
        uint32_t len = fl_load_le32(src + 4);
        if (len > FL_MAX_PAYLOAD || fl_frame_size(len) > size - w->pos)
            goto fail;
        size_t fs = fl_frame_size(len);
        if (fs > sink->room - sink->written)
            return FL_FRAMES_NO_ROOM;
        uint8_t *d = sink->dst + sink->written;
        memcpy(d, src, fs);
        w->at_index = fl_load_le64(src + 8);
        w->at_term = fl_load_le64(src + 16);
        w->at_length = len;
        land(w, sink, d, len, fs, 0, 0, fl_load_le32(d));
    }
    return FL_FRAMES_OK;

fail:
    memset(sink->dst, 0, sink->written);
    return FL_FRAMES_TRUNCATED;
}

int fl_frames_copy(const uint8_t *buf, size_t size, fl_frame_walk *w, int verify, fl_frame_sink *sink) {
    if (verify)
        return copy_checked(buf, size, w, sink);
    if (sink->dst == NULL)
        return FL_FRAMES_OTHER_CHAIN; /* unchecked frames are never taken as they are */
    return copy_trusted(buf, size, w, sink);
}
