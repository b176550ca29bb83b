/*
 * libFuzzer target for the frame-batch check and copy (fastlog_ext/frames.c).
 *
 * The input is a receiver's chain, a control byte and a frame batch (layout in
 * fuzz_frames.h): bytes a follower could be sent by anyone.  Besides the
 * sanitizers catching any access outside the batch or the destination (both
 * are heap blocks of their exact size), it aborts when the contract breaks:
 *   - checking and copying in one pass (in pieces of a few index slots, into a
 *     room that may end mid-batch, the rest checked after, as _core.pyx does)
 *     accepts exactly what the check alone accepts, with the same status at
 *     the same frame;
 *   - a refused batch leaves the destination all zero (all or nothing);
 *   - an accepted batch is written whole, every frame re-verifies with the
 *     record decoder on the receiver's chain (crc, index, kind, reserved
 *     bytes), with zero padding, terms that never decrease, the recorded
 *     offsets and terms, and the sender's bytes apart from the crc (the very
 *     bytes when both chains are the same);
 *   - copying an accepted batch without the check writes the same bytes, and
 *     checking it in place (no destination) keeps the same frames.
 *
 * Seen failing on a deliberately broken build: with the "whole frame fits"
 * length check removed from check_header in frames.c, AddressSanitizer
 * reported a heap-buffer-overflow read in fl_crc32c within seconds.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastlog_core.h"
#include "fuzz_frames.h"

#define FUZZ_NAME "fuzz_frames"
#include "fuzz_check.h"

static int is_refusal(int rc) {
    return rc >= FL_FRAMES_TRUNCATED && rc <= FL_FRAMES_EMPTY;
}

/* Copy with the check, `slots` index slots per call, the rest checked after a
 * full room.  Returns the final status; *by_copy tells whether the copy pass
 * itself refused (then it must have zeroed what it wrote). */
static int check_and_copy(const uint8_t *frames, size_t n, uint32_t seed, uint32_t max_payload, size_t slots,
                          fl_frame_walk *w, fl_frame_sink *sink, size_t max_slots, int *by_copy) {
    int rc;
    fl_frames_begin(w, seed, max_payload);
    *by_copy = 0;
    for (;;) {
        sink->cap = sink->n + slots < max_slots ? sink->n + slots : max_slots;
        rc = fl_frames_copy(frames, n, w, 1, sink);
        if (rc != FL_FRAMES_NO_SLOTS)
            break;
        REQUIRE(sink->n == sink->cap);
    }
    if (rc == FL_FRAMES_NO_ROOM)
        return fl_frames_check(frames, n, w);
    *by_copy = rc != FL_FRAMES_OK;
    if (rc == FL_FRAMES_OK && w->count == 0)
        return FL_FRAMES_EMPTY;
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < FUZZ_FRAMES_PREFIX + FL_BATCH_HEADER_SIZE)
        return 0;
    uint32_t chain = (uint32_t)le(data, 4);
    uint8_t ctl = data[4];
    const uint8_t *batch = data + FUZZ_FRAMES_PREFIX;
    uint32_t seed = (uint32_t)le(batch + 8, 4);
    size_t n = size - FUZZ_FRAMES_PREFIX - FL_BATCH_HEADER_SIZE;
    uint32_t max_payload = FUZZ_FRAMES_SMALL_PAYLOAD(ctl) ? 64u : 1u << 20;

    uint8_t *frames = malloc(n ? n : 1);
    REQUIRE(frames != NULL);
    memcpy(frames, batch + FL_BATCH_HEADER_SIZE, n);

    /* The check alone. */
    fl_frame_walk ref;
    fl_frames_begin(&ref, seed, max_payload);
    int rc = fl_frames_check(frames, n, &ref);
    REQUIRE(rc == FL_FRAMES_OK || is_refusal(rc));
    REQUIRE(ref.pos <= n);
    REQUIRE(rc != FL_FRAMES_OK || (ref.pos == n && ref.count > 0));
    REQUIRE(rc != FL_FRAMES_EMPTY || ref.count == 0);

    /* Check and copy in one pass. */
    static const unsigned room_div[4] = {1, 2, 3, 0};
    size_t room = room_div[FUZZ_FRAMES_ROOM(ctl)] ? n / room_div[FUZZ_FRAMES_ROOM(ctl)] : FL_REC_HEADER_SIZE;
    if (FUZZ_FRAMES_ROOM(ctl) == 0)
        room = n;
    size_t max_slots = n / FL_REC_HEADER_SIZE + 1;
    size_t slots = FUZZ_FRAMES_SLOTS(ctl) ? FUZZ_FRAMES_SLOTS(ctl) : max_slots;
    uint8_t *dst = calloc(room ? room : 1, 1);
    uint64_t *offsets = malloc(max_slots * sizeof(uint64_t));
    uint64_t *terms = malloc(max_slots * sizeof(uint64_t));
    REQUIRE(dst != NULL && offsets != NULL && terms != NULL);
    fl_frame_walk w;
    fl_frame_sink sink = {dst, room, 0, 4096, chain, offsets, terms, 0, 0};
    int by_copy;
    int rc2 = check_and_copy(frames, n, seed, max_payload, slots, &w, &sink, max_slots, &by_copy);
    REQUIRE(rc2 == rc);
    REQUIRE(w.pos == ref.pos && w.count == ref.count);
    REQUIRE(sink.written <= room);

    if (rc != FL_FRAMES_OK) {
        if (by_copy)
            REQUIRE(fl_all_zero(dst, 0, room));
    } else {
        REQUIRE(w.first_index == ref.first_index && w.first_term == ref.first_term && w.last_term == ref.last_term);
        /* What fitted re-verifies on the receiver's chain, frame by frame. */
        size_t off = 0;
        uint32_t c = chain;
        uint64_t index = ref.first_index, last_term = 0;
        for (size_t i = 0; i < sink.n; i++) {
            fl_record rec;
            REQUIRE(fl_decode(dst, sink.written, off, c, index, 1, &rec) == FL_OK);
            size_t fs = fl_frame_size(rec.length);
            REQUIRE(rec.length <= max_payload);
            REQUIRE(fl_all_zero(dst + off, FL_REC_HEADER_SIZE + rec.length, fs));
            REQUIRE(i == 0 || rec.term >= last_term);
            REQUIRE(offsets[i] == 4096 + off && terms[i] == rec.term);
            REQUIRE(memcmp(dst + off + 4, frames + off + 4, fs - 4) == 0);
            if (chain == seed)
                REQUIRE(memcmp(dst + off, frames + off, 4) == 0);
            c = rec.crc;
            last_term = rec.term;
            index++;
            off += fs;
        }
        REQUIRE(off == sink.written && sink.chain == c);
        REQUIRE(fl_all_zero(dst, sink.written, room));
        REQUIRE(room < n || sink.written == n); /* a room for all takes all */

        /* Checking in place, for a receiver on the sender's chain, keeps
         * the same frames. */
        if (chain == seed) {
            fl_frame_walk w4;
            fl_frame_sink sink4 = {NULL, room, 0, 4096, chain, offsets, terms, max_slots, 0};
            fl_frames_begin(&w4, seed, max_payload);
            int rc5 = fl_frames_copy(frames, n, &w4, 1, &sink4);
            REQUIRE(rc5 == FL_FRAMES_OK || rc5 == FL_FRAMES_NO_ROOM);
            REQUIRE(sink4.n == sink.n && sink4.written == sink.written && sink4.chain == sink.chain);
        }

        /* Copying without the check writes the same bytes. */
        uint8_t *dst2 = calloc(room ? room : 1, 1);
        REQUIRE(dst2 != NULL);
        fl_frame_walk w2;
        fl_frames_begin(&w2, seed, max_payload);
        fl_frame_sink sink2 = {dst2, room, 0, 4096, chain, offsets, terms, max_slots, 0};
        int rc3 = fl_frames_copy(frames, n, &w2, 0, &sink2);
        REQUIRE(rc3 == FL_FRAMES_OK || rc3 == FL_FRAMES_NO_ROOM);
        REQUIRE(sink2.written == sink.written && sink2.n == sink.n && sink2.chain == sink.chain);
        REQUIRE(memcmp(dst, dst2, room) == 0);
        free(dst2);
    }

    /* Unchecked copies of anything stay inside both buffers. */
    if (rc != FL_FRAMES_OK && n > 0) {
        memset(dst, 0, room);
        fl_frame_walk w3;
        fl_frames_begin(&w3, seed, max_payload);
        fl_frame_sink sink3 = {dst, room, 0, 0, chain, offsets, terms, max_slots, 0};
        int rc4 = fl_frames_copy(frames, n, &w3, 0, &sink3);
        REQUIRE(rc4 == FL_FRAMES_OK || rc4 == FL_FRAMES_NO_ROOM || rc4 == FL_FRAMES_TRUNCATED);
        if (rc4 == FL_FRAMES_TRUNCATED)
            REQUIRE(fl_all_zero(dst, 0, room));
    }

    free(terms);
    free(offsets);
    free(dst);
    free(frames);
    return 0;
}
