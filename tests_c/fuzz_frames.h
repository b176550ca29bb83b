/*
 * Input layout shared by the frame-batch fuzz target (fuzz_frames.c) and its
 * seed corpus generator (fuzz_corpus.c).
 *
 *   bytes 0..4    the receiver's chain: crc of its last record (little-endian u32)
 *   byte  4       control: bits 0..1 pick the destination room (whole batch,
 *                 half, a third, one frame header), bits 2..4 the index slots
 *                 per call (1..7, or 0 = as many as needed), bit 5 a small
 *                 max_payload (64 bytes instead of 1 MiB)
 *   bytes 5..     a frame batch: 16-byte header (chain seed at bytes 8..12),
 *                 then the frames
 */
#ifndef FASTLOG_FUZZ_FRAMES_H
#define FASTLOG_FUZZ_FRAMES_H

#define FUZZ_FRAMES_PREFIX 5u
#define FUZZ_FRAMES_ROOM(ctl) ((unsigned)(ctl) & 3u)
#define FUZZ_FRAMES_SLOTS(ctl) (((unsigned)(ctl) >> 2) & 7u)
#define FUZZ_FRAMES_SMALL_PAYLOAD(ctl) (((unsigned)(ctl) >> 5) & 1u)

#endif
