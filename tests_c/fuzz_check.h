/*
 * What the fuzz targets share: the check that stops a run (abort() is what
 * libFuzzer reports as a crash, with the input that caused it) and a
 * little-endian field reader.  Define FUZZ_NAME before including it.
 */
#ifndef FASTLOG_FUZZ_CHECK_H
#define FASTLOG_FUZZ_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define REQUIRE(cond)                                                                   \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, FUZZ_NAME ": %s:%d: broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                    \
        }                                                                               \
    } while (0)

/* The n-byte little-endian field at p. */
static inline uint64_t le(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

#endif
