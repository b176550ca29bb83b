/*
 * Throughput of the fastlog C core: CRC-32C (both paths), record encoding,
 * segment scanning and the zero check.  Prints numbers only; speed targets are
 * judged by people and by bench/, never asserted in tests.
 *
 *   bench_core [seconds-per-measurement]   (default 0.3)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fastlog_core.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double budget = 0.3;
static volatile uint32_t sink;

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

/* Bytes per second of `fn` over `len`-byte buffers (starting 4 bytes past an
 * 8-byte boundary, like the checksummed part of a record). */
static double crc_rate(crc_fn fn, const uint8_t *buf, size_t len) {
    size_t reps = 1;
    for (;;) {
        double t0 = now();
        uint32_t c = 0;
        for (size_t i = 0; i < reps; i++)
            c = fn(c, buf + 4, len);
        double dt = now() - t0;
        sink = c;
        if (dt >= budget)
            return (double)len * (double)reps / dt;
        reps *= dt > budget / 20 ? 2 : 10;
    }
}

int main(int argc, char **argv) {
    if (argc > 1)
        budget = atof(argv[1]);
    const size_t mib = 1u << 20;
    uint8_t *buf = malloc(64 * mib + 64);
    if (buf == NULL)
        return 2;
    for (size_t i = 0; i < 64 * mib + 64; i++)
        buf[i] = (uint8_t)(i * 2654435761u >> 13);

    printf("crc32c hardware path: %s\n", fl_crc32c_hw_available() ? "yes (SSE4.2)" : "no");
    static const size_t sizes[] = {64, 256, 284, 4096, 1u << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        double hw = crc_rate(fl_crc32c, buf, sizes[i]);
        double sw = crc_rate(fl_crc32c_portable, buf, sizes[i]);
        printf("crc32c %8zu B: dispatch %6.2f GB/s   portable %5.2f GB/s\n", sizes[i], hw / 1e9, sw / 1e9);
    }

    /* Encoding 256-byte entries into a 64 MiB region, as the append path does. */
    const uint32_t plen = 256;
    const size_t fs = fl_frame_size(plen);
    const size_t per_seg = (64 * mib - FL_SEG_DATA_START) / fs;
    uint8_t *seg = calloc(1, 64 * mib);
    uint8_t payload[256];
    memset(payload, 0x5a, sizeof payload);
    double best = 1e9;
    for (int round = 0; round < 5; round++) {
        double t0 = now();
        uint32_t seed = 0;
        for (size_t i = 0; i < per_seg; i++)
            seed = fl_encode(seg + FL_SEG_DATA_START + i * fs, seed, i + 1, 1, 1, payload, plen);
        double dt = now() - t0;
        sink = seed;
        if (dt < best)
            best = dt;
    }
    printf("fl_encode 256 B payload: %.1f ns/entry (%.2f M entries/s)\n", best / (double)per_seg * 1e9,
           (double)per_seg / best / 1e6);

    /* Scanning (verifying) the full segment written above. */
    uint64_t *offs = malloc(per_seg * sizeof *offs), *terms = malloc(per_seg * sizeof *terms);
    best = 1e9;
    for (int round = 0; round < 5; round++) {
        size_t off = FL_SEG_DATA_START;
        uint32_t seed = 0;
        uint64_t next = 1;
        int status;
        double t0 = now();
        size_t n = fl_scan(seg, 64 * mib, &off, &seed, &next, offs, terms, per_seg, &status);
        double dt = now() - t0;
        if (n != per_seg) {
            fprintf(stderr, "scan found %zu of %zu records\n", n, per_seg);
            return 1;
        }
        if (dt < best)
            best = dt;
    }
    printf("fl_scan 64 MiB of 256 B entries: %.1f ms (%.2f GB/s, %.1f ns/entry)\n", best * 1e3,
           (double)(per_seg * fs) / best / 1e9, best / (double)per_seg * 1e9);

    memset(seg, 0, 64 * mib);
    best = 1e9;
    for (int round = 0; round < 5; round++) {
        double t0 = now();
        sink = (uint32_t)fl_all_zero(seg, 0, 64 * mib);
        double dt = now() - t0;
        if (dt < best)
            best = dt;
    }
    printf("fl_all_zero 64 MiB: %.1f ms (%.2f GB/s)\n", best * 1e3, 64.0 * (double)mib / best / 1e9);

    free(offs);
    free(terms);
    free(seg);
    free(buf);
    return 0;
}
