/*
 * Private helpers of the fastlog C core: little-endian loads and stores.
 *
 * The on-disk format is little-endian and records sit at arbitrary offsets of
 * a mapped file, so every multi-byte access goes through memcpy: that is
 * alignment-safe and strict-aliasing-safe, and compilers turn it into a single
 * move on the hosts that allow unaligned access.
 */
#ifndef FASTLOG_BYTES_H
#define FASTLOG_BYTES_H

#include <stdint.h>
#include <string.h>

#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define FL_BIG_ENDIAN 1
#else
#define FL_BIG_ENDIAN 0
#endif

static inline uint32_t fl_load_le32(const uint8_t *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
#if FL_BIG_ENDIAN
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t fl_load_le64(const uint8_t *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if FL_BIG_ENDIAN
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline void fl_store_le32(uint8_t *p, uint32_t v) {
#if FL_BIG_ENDIAN
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, sizeof v);
}

static inline void fl_store_le64(uint8_t *p, uint64_t v) {
#if FL_BIG_ENDIAN
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, sizeof v);
}

#endif /* FASTLOG_BYTES_H */
