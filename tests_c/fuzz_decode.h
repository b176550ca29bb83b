/*
 * Input layout shared by the fuzz target (fuzz_decode.c) and its seed corpus
 * generator (fuzz_corpus.c).
 *
 *   bytes 0..4    chain seed (little-endian u32)
 *   bytes 4..12   first expected index (little-endian u64)
 *   byte  12      control: bits 0..5 pick the scan cap (1..64)
 *   bytes 13..    the segment data region to scan
 */
#ifndef FASTLOG_FUZZ_DECODE_H
#define FASTLOG_FUZZ_DECODE_H

#define FUZZ_PREFIX 13u
#define FUZZ_CAP(ctl) ((size_t)((ctl) & 63u) + 1u)

#endif
