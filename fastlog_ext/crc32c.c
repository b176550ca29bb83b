/*
 * CRC-32C (Castagnoli) for fastlog.
 *
 * Every record is checksummed on append and every record of a segment is
 * verified on open, so this is the hottest byte loop of the library.  Two
 * implementations with identical results:
 *
 *   - a portable slicing-by-8 table loop (any CPU, any byte order);
 *   - the SSE4.2 crc32 instruction, chosen at run time with cpuid.  It is
 *     compiled with a function-level target attribute so the shipped build
 *     needs no -march flag and still runs on CPUs without SSE4.2.
 *
 * The crc32 instruction has a latency of 3 cycles but a throughput of one per
 * cycle, so a single dependent chain uses a third of the unit.  Long buffers
 * are therefore split into three equal blocks checksummed as three independent
 * chains and merged afterwards.  Merging needs "advance a CRC register over n
 * zero bytes", a linear map over GF(2); for the few block sizes used it is
 * precomputed as four byte-indexed tables, so no carry-less multiply is needed.
 *
 * Conventions: the public functions take and return the finished CRC value
 * (initial value and final xor 0xFFFFFFFF), so a returned CRC can be passed
 * back as `crc` to continue it.  Internally the "raw register" is the
 * bit-inverted value, which is what both the tables and the instruction work on.
 */
#include <stddef.h>
#include <stdint.h>

#include "fastlog_core.h"
#include "fl_bytes.h"

/* FASTLOG_NO_HW_CRC builds the table path only (used to test the fallback on
 * machines that have the instruction). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(FASTLOG_NO_HW_CRC)
#define FL_CRC_X86 1
#include <cpuid.h>
#include <nmmintrin.h>
#else
#define FL_CRC_X86 0
#endif

/* Reflected form of the Castagnoli polynomial 0x1EDC6F41. */
#define CRC32C_POLY 0x82F63B78u

/*
 * crc_tab[k][b]: raw register after feeding byte b and then k zero bytes into
 * a zero register.  Slicing-by-8 looks up each of 8 input bytes in the table
 * matching its distance from the end of the 8-byte word.
 */
static uint32_t crc_tab[8][256];

/* Set once at load time when the CPU has the crc32 instruction. */
static int crc_hw_enabled;

/* ---- portable path --------------------------------------------------------- */

static uint32_t crc32c_table_raw(uint32_t reg, const uint8_t *p, size_t len) {
    while (len >= 8) {
        /* Little-endian loads make this byte-order independent. */
        uint32_t lo = fl_load_le32(p) ^ reg;
        uint32_t hi = fl_load_le32(p + 4);
        reg = crc_tab[7][lo & 0xffu] ^ crc_tab[6][(lo >> 8) & 0xffu] ^ crc_tab[5][(lo >> 16) & 0xffu] ^
              crc_tab[4][lo >> 24] ^ crc_tab[3][hi & 0xffu] ^ crc_tab[2][(hi >> 8) & 0xffu] ^
              crc_tab[1][(hi >> 16) & 0xffu] ^ crc_tab[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len-- > 0)
        reg = (reg >> 8) ^ crc_tab[0][(reg ^ *p++) & 0xffu];
    return reg;
}

uint32_t fl_crc32c_portable(uint32_t crc, const void *data, size_t len) {
    return ~crc32c_table_raw(~crc, (const uint8_t *)data, len);
}

/* ---- hardware path (x86-64 SSE4.2) ---------------------------------------- */

#if FL_CRC_X86

/* ---- GF(2) linear maps on a 32-bit CRC register -------------------------
 * A map is stored as the images of the 32 unit vectors; applying it to v
 * xors the images of v's set bits.  Only used at load time to build the
 * "skip n zero bytes" tables.
 */
typedef struct {
    uint32_t col[32];
} gf2_map;

static uint32_t gf2_apply(const gf2_map *m, uint32_t v) {
    uint32_t r = 0;
    for (unsigned i = 0; v != 0; i++, v >>= 1) {
        if (v & 1u)
            r ^= m->col[i];
    }
    return r;
}

/* out = a after b (out may not alias a or b). */
static void gf2_compose(gf2_map *out, const gf2_map *a, const gf2_map *b) {
    for (unsigned i = 0; i < 32; i++)
        out->col[i] = gf2_apply(a, b->col[i]);
}

/* The map "advance the raw register over n zero bytes", by repeated squaring. */
static void gf2_zero_bytes(gf2_map *out, size_t n) {
    gf2_map base, tmp;
    for (unsigned i = 0; i < 32; i++) {
        uint32_t v = 1u << i;
        base.col[i] = (v >> 8) ^ crc_tab[0][v & 0xffu]; /* one zero byte */
        out->col[i] = v;                                /* identity */
    }
    while (n != 0) {
        if (n & 1u) {
            gf2_compose(&tmp, &base, out);
            *out = tmp;
        }
        n >>= 1;
        if (n != 0) {
            gf2_compose(&tmp, &base, &base);
            base = tmp;
        }
    }
}

/* Byte tables of a linear map, so that applying it costs four lookups. */
static void gf2_byte_tables(uint32_t tab[4][256], const gf2_map *m) {
    for (unsigned k = 0; k < 4; k++)
        for (unsigned b = 0; b < 256; b++)
            tab[k][b] = gf2_apply(m, (uint32_t)b << (8 * k));
}

static inline uint32_t apply_shift(const uint32_t tab[4][256], uint32_t v) {
    return tab[0][v & 0xffu] ^ tab[1][(v >> 8) & 0xffu] ^ tab[2][(v >> 16) & 0xffu] ^ tab[3][v >> 24];
}


/*
 * Block sizes of the three-chain loop.  The long block amortises the merge
 * over big scans (recovery reads whole segments); the medium one helps
 * buffers of a few hundred bytes to a few KiB; the short one covers a typical
 * small record (a 256-byte payload is a 284-byte checksummed region).
 * Below 3 * HW_SHORT bytes a single chain is used.
 */
#define HW_LONG 8192u
#define HW_MEDIUM 512u
#define HW_SHORT 64u

static uint32_t shift_long[4][256];
static uint32_t shift_medium[4][256];
static uint32_t shift_short[4][256];

/*
 * Checksum three consecutive blocks of `block` bytes as independent chains,
 * then merge: crc(A||B||C) = zeros_block(zeros_block(a) ^ b) ^ c, where the
 * chains of B and C start from a zero register (the register update is linear).
 */
__attribute__((target("sse4.2"), always_inline)) static inline uint64_t
hw_three_blocks(uint64_t c0, const uint8_t *p, size_t block, const uint32_t shift[4][256]) {
    uint64_t c1 = 0, c2 = 0;
    const uint8_t *end = p + block;
    do {
        c0 = _mm_crc32_u64(c0, fl_load_le64(p));
        c1 = _mm_crc32_u64(c1, fl_load_le64(p + block));
        c2 = _mm_crc32_u64(c2, fl_load_le64(p + 2 * block));
        p += 8;
    } while (p < end);
    c0 = apply_shift(shift, (uint32_t)c0) ^ (uint32_t)c1;
    c0 = apply_shift(shift, (uint32_t)c0) ^ (uint32_t)c2;
    return c0;
}

__attribute__((target("sse4.2"))) static uint32_t crc32c_hw_raw(uint32_t reg, const uint8_t *p, size_t len) {
    uint64_t c = reg;
    if (len >= 8) {
        /* Align the 8-byte loads (records start 4 bytes into an 8-aligned frame). */
        if ((uintptr_t)p & 1u) {
            c = _mm_crc32_u8((uint32_t)c, *p);
            p += 1;
            len -= 1;
        }
        if ((uintptr_t)p & 2u) {
            uint16_t v;
            memcpy(&v, p, 2);
            c = _mm_crc32_u16((uint32_t)c, v);
            p += 2;
            len -= 2;
        }
        if ((uintptr_t)p & 4u) {
            c = _mm_crc32_u32((uint32_t)c, fl_load_le32(p));
            p += 4;
            len -= 4;
        }
    }
    while (len >= 3 * HW_LONG) {
        c = hw_three_blocks(c, p, HW_LONG, shift_long);
        p += 3 * HW_LONG;
        len -= 3 * HW_LONG;
    }
    while (len >= 3 * HW_MEDIUM) {
        c = hw_three_blocks(c, p, HW_MEDIUM, shift_medium);
        p += 3 * HW_MEDIUM;
        len -= 3 * HW_MEDIUM;
    }
    while (len >= 3 * HW_SHORT) {
        c = hw_three_blocks(c, p, HW_SHORT, shift_short);
        p += 3 * HW_SHORT;
        len -= 3 * HW_SHORT;
    }
    while (len >= 8) {
        c = _mm_crc32_u64(c, fl_load_le64(p));
        p += 8;
        len -= 8;
    }
    if (len >= 4) {
        c = _mm_crc32_u32((uint32_t)c, fl_load_le32(p));
        p += 4;
        len -= 4;
    }
    while (len-- > 0)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return (uint32_t)c;
}

/* Three chains over three buffers of the same length, one instruction of
 * each per step: what one chain waits for, the other two fill. */
__attribute__((target("sse4.2"))) static void crc32c_hw_raw_x3(uint32_t reg[3], const uint8_t *const p[3],
                                                                size_t len) {
    uint64_t c0 = reg[0], c1 = reg[1], c2 = reg[2];
    const uint8_t *a = p[0], *b = p[1], *c = p[2];
    while (len >= 8) {
        c0 = _mm_crc32_u64(c0, fl_load_le64(a));
        c1 = _mm_crc32_u64(c1, fl_load_le64(b));
        c2 = _mm_crc32_u64(c2, fl_load_le64(c));
        a += 8;
        b += 8;
        c += 8;
        len -= 8;
    }
    if (len >= 4) {
        c0 = _mm_crc32_u32((uint32_t)c0, fl_load_le32(a));
        c1 = _mm_crc32_u32((uint32_t)c1, fl_load_le32(b));
        c2 = _mm_crc32_u32((uint32_t)c2, fl_load_le32(c));
        a += 4;
        b += 4;
        c += 4;
        len -= 4;
    }
    while (len-- > 0) {
        c0 = _mm_crc32_u8((uint32_t)c0, *a++);
        c1 = _mm_crc32_u8((uint32_t)c1, *b++);
        c2 = _mm_crc32_u8((uint32_t)c2, *c++);
    }
    reg[0] = (uint32_t)c0;
    reg[1] = (uint32_t)c1;
    reg[2] = (uint32_t)c2;
}

static int cpu_has_sse42(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    return (c & bit_SSE4_2) != 0;
}

#endif /* FL_CRC_X86 */

uint32_t fl_crc32c(uint32_t crc, const void *data, size_t len) {
#if FL_CRC_X86
    if (crc_hw_enabled)
        return ~crc32c_hw_raw(~crc, (const uint8_t *)data, len);
#endif
    return ~crc32c_table_raw(~crc, (const uint8_t *)data, len);
}

void fl_crc32c_x3(const uint32_t crc[3], const uint8_t *const data[3], size_t len, uint32_t out[3]) {
#if FL_CRC_X86
    if (crc_hw_enabled && len < 3 * HW_SHORT * 4) {
        /* Short buffers (records): one chain each, interleaved.  Long ones
         * already run three chains inside each call below. */
        uint32_t reg[3] = {~crc[0], ~crc[1], ~crc[2]};
        crc32c_hw_raw_x3(reg, data, len);
        out[0] = ~reg[0];
        out[1] = ~reg[1];
        out[2] = ~reg[2];
        return;
    }
#endif
    for (int i = 0; i < 3; i++)
        out[i] = fl_crc32c(crc[i], data[i], len);
}

int fl_crc32c_hw_available(void) {
    return crc_hw_enabled;
}

/*
 * Build the tables when the library is loaded (a constructor runs before any
 * caller can reach the functions above, both for the static library and for
 * the Python extension module), so the hot paths need no "initialised?" check
 * and no locking.  The work takes under 0.1 ms.
 */
__attribute__((constructor)) static void crc32c_init(void) {
    for (unsigned b = 0; b < 256; b++) {
        uint32_t reg = b;
        for (int bit = 0; bit < 8; bit++)
            reg = (reg >> 1) ^ (CRC32C_POLY & (0u - (reg & 1u)));
        crc_tab[0][b] = reg;
    }
    for (unsigned k = 1; k < 8; k++)
        for (unsigned b = 0; b < 256; b++) {
            uint32_t prev = crc_tab[k - 1][b];
            crc_tab[k][b] = (prev >> 8) ^ crc_tab[0][prev & 0xffu];
        }
#if FL_CRC_X86
    gf2_map m;
    gf2_zero_bytes(&m, HW_LONG);
    gf2_byte_tables(shift_long, &m);
    gf2_zero_bytes(&m, HW_MEDIUM);
    gf2_byte_tables(shift_medium, &m);
    gf2_zero_bytes(&m, HW_SHORT);
    gf2_byte_tables(shift_short, &m);
    crc_hw_enabled = cpu_has_sse42();
#endif
}
