/*
 * Writes the seed corpus of fuzz_decode: data regions made of valid record
 * chains (so the fuzzer starts from inputs that pass the checksum), plus the
 * usual endings of a segment: a zero tail, a torn last record, a damaged
 * record, a short non-zero remainder.
 *
 * With a second directory it also writes the seed corpus of fuzz_frames:
 * valid frame batches (layout in fuzz_frames.h) for receivers on the same and
 * on another chain, plus a few refused ones.
 *
 *   fuzz_corpus DIR [FRAMES_DIR]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fastlog_core.h"
#include "fuzz_decode.h"
#include "fuzz_frames.h"

static uint8_t input[FUZZ_PREFIX + 8192];
static int written;

/* Fills the header of `input` and encodes `count` records after it; returns
 * the offset (within the data region) of the end of the last record. */
static size_t make_chain(uint32_t seed, uint64_t first, uint8_t ctl, size_t count, const uint32_t *lens,
                         size_t nlens) {
    memset(input, 0, sizeof input);
    for (int i = 0; i < 4; i++)
        input[i] = (uint8_t)(seed >> (8 * i));
    for (int i = 0; i < 8; i++)
        input[4 + i] = (uint8_t)(first >> (8 * i));
    input[12] = ctl;
    uint8_t *data = input + FUZZ_PREFIX;
    size_t off = 0;
    uint8_t payload[512];
    for (size_t i = 0; i < count; i++) {
        uint32_t len = lens[i % nlens];
        for (uint32_t b = 0; b < len; b++)
            payload[b] = (uint8_t)(b * 31 + i);
        seed = fl_encode(data + off, seed, first + i, 1 + i / 4, (uint8_t)(i % (FL_KIND_MAX + 1)), payload, len);
        off += fl_frame_size(len);
    }
    return off;
}

static int emit(const char *dir, const char *name, size_t data_len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    size_t total = FUZZ_PREFIX + data_len;
    if (fwrite(input, 1, total, f) != total || fclose(f) != 0) {
        perror(path);
        return -1;
    }
    written++;
    return 0;
}

static uint8_t batch_input[FUZZ_FRAMES_PREFIX + FL_BATCH_HEADER_SIZE + 8192];

/* A frame batch input of `count` frames chained from `seed` for a receiver on
 * `chain`; returns its size. */
static size_t make_batch(uint32_t chain, uint8_t ctl, uint32_t seed, uint64_t first, size_t count,
                         const uint32_t *lens, size_t nlens) {
    memset(batch_input, 0, sizeof batch_input);
    for (int i = 0; i < 4; i++)
        batch_input[i] = (uint8_t)(chain >> (8 * i));
    batch_input[4] = ctl;
    uint8_t *hdr = batch_input + FUZZ_FRAMES_PREFIX;
    memcpy(hdr, FL_BATCH_MAGIC, 4);
    hdr[4] = FL_BATCH_VERSION;
    for (int i = 0; i < 4; i++)
        hdr[8 + i] = (uint8_t)(seed >> (8 * i));
    uint8_t *data = hdr + FL_BATCH_HEADER_SIZE;
    size_t off = 0;
    uint8_t payload[512];
    for (size_t i = 0; i < count; i++) {
        uint32_t len = lens[i % nlens];
        for (uint32_t b = 0; b < len; b++)
            payload[b] = (uint8_t)(b * 13 + i);
        seed = fl_encode(data + off, seed, first + i, 2 + i / 3, (uint8_t)(i % (FL_KIND_MAX + 1)), payload, len);
        off += fl_frame_size(len);
    }
    return FUZZ_FRAMES_PREFIX + FL_BATCH_HEADER_SIZE + off;
}

static int emit_batch(const char *dir, const char *name, size_t total) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(batch_input, 1, total, f) != total || fclose(f) != 0) {
        perror(path);
        return -1;
    }
    written++;
    return 0;
}

static int frame_seeds(const char *dir) {
    static const uint32_t small[] = {0, 1, 7, 8, 9, 16, 33};
    static const uint32_t mixed[] = {256, 3, 0, 100, 8, 511};
    static const uint32_t one256[] = {256};
    int rc = 0;
    size_t n;
    /* Same chain, whole room; another chain; split rooms and few slots. */
    n = make_batch(0x1234u, 0x00, 0x1234u, 1, 6, small, sizeof small / sizeof small[0]);
    rc |= emit_batch(dir, "frames-same-chain", n);
    n = make_batch(0xDEADBEEFu, 0x05, 0x1234u, 77, 6, mixed, sizeof mixed / sizeof mixed[0]);
    rc |= emit_batch(dir, "frames-other-chain-half", n);
    n = make_batch(0, 0x0a, 0, 1000, 10, one256, 1);
    rc |= emit_batch(dir, "frames-256-third", n);
    n = make_batch(5, 0x23, 5, 3, 9, small, sizeof small / sizeof small[0]);
    rc |= emit_batch(dir, "frames-small-limit", n);
    /* Refused: a flipped payload bit, a term going down, a cut tail. */
    n = make_batch(9, 0x00, 9, 1, 4, one256, 1);
    batch_input[FUZZ_FRAMES_PREFIX + FL_BATCH_HEADER_SIZE + 300] ^= 1;
    rc |= emit_batch(dir, "frames-bad-crc", n);
    n = make_batch(9, 0x01, 9, 1, 4, small, 3);
    batch_input[FUZZ_FRAMES_PREFIX + FL_BATCH_HEADER_SIZE + 16] = 0xff;
    rc |= emit_batch(dir, "frames-bad-term", n);
    n = make_batch(9, 0x02, 9, 1, 3, one256, 1);
    rc |= emit_batch(dir, "frames-cut", n - 40);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s DIR [FRAMES_DIR]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    static const uint32_t small[] = {0, 1, 7, 8, 9, 16, 33};
    static const uint32_t mixed[] = {256, 3, 0, 100, 8, 511};
    static const uint32_t one256[] = {256};
    int rc = 0;
    char name[64];

    /* Nothing at all, and only zeros. */
    make_chain(0, 1, 0, 0, small, 1);
    rc |= emit(dir, "empty", 0);
    rc |= emit(dir, "zeros", 200);

    /* One record of each small length and kind. */
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        size_t end = make_chain((uint32_t)(0x1000 + i), 1 + i, (uint8_t)i, 1, &small[i], 1);
        snprintf(name, sizeof name, "single-%u", (unsigned)small[i]);
        rc |= emit(dir, name, end + 32);
    }

    /* Chains with a clean zero tail, and ending exactly at the region end. */
    size_t end = make_chain(0, 1, 2, 12, small, sizeof small / sizeof small[0]);
    rc |= emit(dir, "chain-small-tail", end + 64);
    rc |= emit(dir, "chain-small-exact", end);
    end = make_chain(0xDEADBEEFu, 1000000, 63, 8, mixed, sizeof mixed / sizeof mixed[0]);
    rc |= emit(dir, "chain-mixed", end + 40);
    end = make_chain(7, 42, 5, 12, one256, 1);
    rc |= emit(dir, "chain-256", end + 8);

    /* A torn last record: its header and part of its payload only. */
    end = make_chain(7, 42, 1, 5, one256, 1);
    memset(input + FUZZ_PREFIX + end - 200, 0, 200);
    rc |= emit(dir, "torn-payload", end + 32);
    end = make_chain(7, 42, 1, 5, one256, 1);
    memset(input + FUZZ_PREFIX + end - fl_frame_size(256) + 20, 0, fl_frame_size(256) - 20);
    rc |= emit(dir, "torn-header", end + 32);

    /* A damaged record in the middle of a chain. */
    end = make_chain(3, 9, 4, 6, small, sizeof small / sizeof small[0]);
    input[FUZZ_PREFIX + 3 * 32 + 17] ^= 0x10;
    rc |= emit(dir, "damaged-middle", end + 32);

    /* A short non-zero remainder after the last record. */
    end = make_chain(3, 9, 0, 3, small, sizeof small / sizeof small[0]);
    input[FUZZ_PREFIX + end + 5] = 0xff;
    rc |= emit(dir, "short-tail", end + 12);

    /* A length field claiming more than the region holds. */
    end = make_chain(3, 9, 0, 2, small, 2);
    input[FUZZ_PREFIX + 32 + 7] = 0x80;
    rc |= emit(dir, "huge-length", end + 32);

    if (argc == 3)
        rc |= frame_seeds(argv[2]);
    if (rc != 0)
        return 1;
    printf("fuzz_corpus: %d seed inputs in %s\n", written, dir);
    return 0;
}
