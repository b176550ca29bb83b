/*
 * libFuzzer target for the record decoder and segment scanner.
 *
 * The input is a seed, a first index and a data region (layout in
 * fuzz_decode.h), as recovery would see them in a damaged or hostile segment.
 * Besides the sanitizers catching any read outside the region, it checks the
 * scanner's contract and aborts when it is broken:
 *   - scanning in pieces of `cap` records finds the same records as one call;
 *   - every record found lies inside the region, in order, with consecutive
 *     indexes, and re-decodes to the same fields;
 *   - re-encoding a found record reproduces its bytes exactly (so the decoder
 *     accepts nothing the encoder would not write, apart from padding);
 *   - a scan ends with a valid status at the offset where decoding fails.
 * The data region is copied to a heap block of its exact size, so the
 * decoder's bounds are checked at the byte.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastlog_core.h"
#include "fuzz_decode.h"

#define FUZZ_NAME "fuzz_decode"
#include "fuzz_check.h"

/* Walks the chain from the start again, checking each stored record. */
static void check_records(const uint8_t *buf, size_t size, uint32_t seed, uint64_t first, const uint64_t *offs,
                          const uint64_t *terms, size_t n) {
    uint64_t expect_off = 0;
    for (size_t i = 0; i < n; i++) {
        REQUIRE(offs[i] == expect_off);
        REQUIRE(offs[i] + FL_REC_HEADER_SIZE <= size);
        fl_record rec;
        REQUIRE(fl_decode(buf, size, (size_t)offs[i], seed, first + i, 1, &rec) == FL_OK);
        REQUIRE(rec.term == terms[i]);
        REQUIRE(rec.index == first + i);
        REQUIRE(rec.kind <= FL_KIND_MAX);
        REQUIRE(rec.payload == buf + offs[i] + FL_REC_HEADER_SIZE);
        REQUIRE(offs[i] + fl_frame_size(rec.length) <= size);

        size_t fs = fl_frame_size(rec.length);
        uint8_t *again = malloc(fs);
        REQUIRE(again != NULL);
        uint32_t crc = fl_encode(again, seed, rec.index, rec.term, rec.kind, rec.payload, rec.length);
        REQUIRE(crc == rec.crc);
        REQUIRE(memcmp(again, buf + offs[i], FL_REC_HEADER_SIZE + (size_t)rec.length) == 0);
        free(again);

        seed = rec.crc;
        expect_off = offs[i] + fs;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < FUZZ_PREFIX)
        return 0;
    const uint32_t seed0 = (uint32_t)le(data, 4);
    const uint64_t first = le(data + 4, 8);
    const size_t cap = FUZZ_CAP(data[12]);
    const size_t n = size - FUZZ_PREFIX;
    uint8_t *buf = malloc(n ? n : 1);
    REQUIRE(buf != NULL);
    memcpy(buf, data + FUZZ_PREFIX, n);

    /* Every record fits in at least 32 bytes, which bounds the arrays. */
    size_t max_records = n / FL_REC_HEADER_SIZE + 1;
    uint64_t *offs = malloc(max_records * sizeof *offs);
    uint64_t *terms = malloc(max_records * sizeof *terms);
    REQUIRE(offs != NULL && terms != NULL);

    /* One call with room for everything. */
    size_t off_all = 0;
    uint32_t seed_all = seed0;
    uint64_t next_all = first;
    int status_all = -1;
    size_t total = fl_scan(buf, n, &off_all, &seed_all, &next_all, offs, terms, max_records, &status_all);
    REQUIRE(total < max_records);
    REQUIRE(status_all >= FL_ERR_TRUNCATED && status_all <= FL_ERR_ZERO);
    REQUIRE(off_all <= n);
    REQUIRE(next_all == first + total);
    check_records(buf, n, seed0, first, offs, terms, total);
    /* The scan stopped where a single decode fails with the same status. */
    REQUIRE(fl_decode(buf, n, off_all, seed_all, next_all, 1, NULL) == status_all);

    /* The same in pieces of `cap`. */
    size_t off = 0, got = 0;
    uint32_t seed = seed0;
    uint64_t next = first;
    int status = -1;
    uint64_t piece_offs[64], piece_terms[64];
    for (;;) {
        size_t k = fl_scan(buf, n, &off, &seed, &next, piece_offs, piece_terms, cap, &status);
        REQUIRE(k <= cap);
        REQUIRE(got + k <= total);
        for (size_t i = 0; i < k; i++) {
            REQUIRE(piece_offs[i] == offs[got + i]);
            REQUIRE(piece_terms[i] == terms[got + i]);
        }
        got += k;
        if (status != FL_OK)
            break;
        REQUIRE(k == cap);
    }
    REQUIRE(got == total && off == off_all && seed == seed_all && next == next_all && status == status_all);

    /* Decode without the checksum at every offset (including past the end):
     * the bounds checks must hold wherever a frame is claimed to start. */
    for (size_t o = 0; o <= n + 1; o++) {
        fl_record rec;
        uint64_t claimed = o + 16 <= n ? le(buf + o + 8, 8) : first;
        int st = fl_decode(buf, n, o, seed0, claimed, 0, &rec);
        REQUIRE(st >= FL_OK && st <= FL_ERR_ZERO && st != FL_ERR_CRC);
        if (st == FL_OK) {
            REQUIRE(o + fl_frame_size(rec.length) <= n);
            REQUIRE(rec.payload + rec.length <= buf + n);
        }
        if (st == FL_ERR_ZERO)
            REQUIRE(fl_all_zero(buf, o, o + FL_REC_HEADER_SIZE <= n ? o + FL_REC_HEADER_SIZE : n));
    }
    /* The zero check over a few sub-ranges. */
    for (size_t s = 0; s < n && s < 64; s += 7)
        (void)fl_all_zero(buf, s, n - s / 2);

    free(terms);
    free(offs);
    free(buf);
    return 0;
}
