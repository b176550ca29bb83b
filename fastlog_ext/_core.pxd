# C declarations of the fastlog core (fastlog_core.h) and of the extension types
# of fastlog_ext._core, so other Cython modules can `cimport` them.

from cpython.object cimport PyObject
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef extern from "fastlog_core.h" nogil:
    unsigned int FL_FORMAT_VERSION
    unsigned int FL_SEG_HEADER_SIZE
    unsigned int FL_SEG_DATA_START
    unsigned int FL_REC_HEADER_SIZE
    unsigned int FL_REC_ALIGN
    unsigned int FL_KIND_MAX
    unsigned int FL_MAX_PAYLOAD

    enum:
        FL_OK
        FL_ERR_TRUNCATED
        FL_ERR_RESERVED
        FL_ERR_INDEX
        FL_ERR_CRC
        FL_ERR_ZERO

    ctypedef struct fl_record:
        uint64_t index
        uint64_t term
        uint32_t length
        uint32_t crc
        uint8_t kind
        const uint8_t *payload

    size_t fl_frame_size(uint32_t payload_len)

    uint32_t fl_crc32c(uint32_t crc, const void *data, size_t length)
    uint32_t fl_crc32c_portable(uint32_t crc, const void *data, size_t length)
    int fl_crc32c_hw_available()

    uint32_t fl_encode(uint8_t *dst, uint32_t seed, uint64_t index, uint64_t term, uint8_t kind,
                       const uint8_t *payload, uint32_t length)
    int fl_decode(const uint8_t *buf, size_t size, size_t off, uint32_t seed, uint64_t expect_index,
                  int verify_crc, fl_record *out)
    size_t fl_scan(const uint8_t *buf, size_t size, size_t *off, uint32_t *seed, uint64_t *next_index,
                   uint64_t *offsets, uint64_t *terms, size_t cap, int *status)
    int fl_all_zero(const uint8_t *buf, size_t start, size_t end)

    unsigned int FL_BATCH_VERSION
    unsigned int FL_BATCH_HEADER_SIZE
    enum:
        FL_FRAMES_OK
        FL_FRAMES_TRUNCATED
        FL_FRAMES_RESERVED
        FL_FRAMES_TOO_LARGE
        FL_FRAMES_INDEX_ZERO
        FL_FRAMES_INDEX
        FL_FRAMES_TERM
        FL_FRAMES_CRC
        FL_FRAMES_PADDING
        FL_FRAMES_EMPTY
        FL_FRAMES_NO_ROOM
        FL_FRAMES_NO_SLOTS
        FL_FRAMES_OTHER_CHAIN
    ctypedef struct fl_frame_walk:
        size_t pos
        size_t count
        uint32_t seed
        uint32_t max_payload
        uint64_t next_index
        uint64_t first_index
        uint64_t first_term
        uint64_t last_term
        uint64_t at_index
        uint64_t at_term
        uint32_t at_length
    ctypedef struct fl_frame_sink:
        uint8_t *dst
        size_t room
        size_t written
        uint64_t file_off
        uint32_t chain
        uint64_t *offsets
        uint64_t *terms
        size_t cap
        size_t n
    void fl_frames_begin(fl_frame_walk *w, uint32_t seed, uint32_t max_payload)
    int fl_frames_check(const uint8_t *buf, size_t size, fl_frame_walk *w)
    int fl_frames_copy(const uint8_t *buf, size_t size, fl_frame_walk *w, int verify, fl_frame_sink *sink)


cdef extern from "fl_zeroer.h" nogil:
    ctypedef struct fl_zeroer:
        const void *token
    int fl_zeroer_init(fl_zeroer *z)
    void fl_zeroer_destroy(fl_zeroer *z)
    int fl_zeroer_reserve(fl_zeroer *z, const void *token, int fd, size_t end, size_t need_end, size_t known,
                          size_t limit, size_t chunk, size_t ahead, size_t *prepared)
    size_t fl_zeroer_advance(fl_zeroer *z, const void *token, int fd, size_t end, size_t new_end, size_t known,
                             size_t limit, size_t chunk, size_t ahead)
    int fl_zeroer_sync_error(fl_zeroer *z)
    void fl_zeroer_fail_next_sync(fl_zeroer *z, int err)
    void fl_zeroer_delay_writes(fl_zeroer *z, unsigned usec)
    void fl_zeroer_release(fl_zeroer *z, const void *token)


# One attached segment: the exported buffer of its mapping and the position of
# every record in it.  The exported buffer is what keeps the mapping alive
# (mmap.close() raises BufferError while an export exists).
cdef struct Segment:
    Py_buffer view
    bint has_view         # view holds an export to release
    uint8_t *base
    size_t size
    bint writable         # the buffer is writable: stores through the mapping are allowed
    uint64_t first        # index of the first record slot
    size_t count          # records attached
    size_t cap            # capacity of offsets/terms
    uint64_t *offsets     # byte offset of each record
    uint64_t *terms       # term of each record
    size_t data_start
    size_t end            # offset just past the last record
    uint32_t seed         # chain seed of the first record
    uint32_t last_crc     # crc of the last record (seed when none)
    int fd                # >= 0: appends, zero and write_at use pwrite to this file (see append)
    size_t prepared       # the zeroer's watermark as last seen: blocks in [end, prepared) are written (see append)


# A batch entry gathered with the GIL held, so frames can be encoded without it.
cdef struct BatchItem:
    PyObject *owner       # a reference to the payload bytes, held while encoding
    const uint8_t *data
    uint64_t index
    uint64_t term
    uint32_t length
    uint8_t kind


# Field layout of the extension types (their behaviour is in _core.pyx).
cdef class Entry:
    cdef readonly uint64_t index
    cdef readonly uint64_t term
    cdef readonly bytes payload
    cdef readonly object kind
    cdef uint8_t kind_code    # int(kind), for the encoder


cdef class LogCore:
    cdef Segment **segs       # attached segments in index order; each allocated on its own,
    cdef Py_ssize_t nsegs     # so a pointer held without the GIL survives table growth
    cdef Py_ssize_t segs_cap
    cdef Py_ssize_t last_hit  # segment of the last lookup, tried before a binary search
    cdef uint64_t _floor      # indexes below read as missing
    cdef uint32_t _max_payload
    cdef bint _verify_reads
    cdef int _busy        # calls running with the GIL released (see _enter)
    cdef BatchItem *scratch   # append's gathered batch (used only inside its busy section)
    cdef size_t scratch_cap
    cdef uint8_t *wbuf        # append's frame buffer when segments are written with pwrite
    cdef size_t wbuf_cap
    cdef fl_zeroer zeroer     # zero writes ahead of prepared appends (fl_zeroer.h)
    cdef bint zeroer_ready    # zeroer initialised
    cdef size_t zero_ahead    # how far the zeroer's thread may run ahead; 0: no thread
    cdef size_t unflushed     # record bytes appended since the last note_flushed (see _ready_to_write)

    cdef int _enter(self, str what) except -1
    cdef Py_ssize_t _pos(self, object pos) except -1
    cdef bint _bounds(self, uint64_t *lo, uint64_t *hi) noexcept
    cdef Py_ssize_t _find(self, uint64_t index) noexcept
    cdef Entry _read(self, Segment *s, size_t k)
    cdef int _check_entries(self, PyObject **items, Py_ssize_t n, Py_ssize_t gather_from,
                            BatchItem *out, Py_ssize_t *gathered, uint64_t *first,
                            size_t *total) except -1
    cdef bint _clamp(self, uint64_t *a, uint64_t *b) noexcept
    cdef size_t _frames_measure(self, uint64_t a0, uint64_t b0, uint64_t *a, uint64_t *b, Py_ssize_t *p) except? 0
    cdef size_t _frames_span(self, Py_ssize_t p, uint64_t a, uint64_t b, uint8_t *dst) noexcept
    cdef int _check_span(self, Segment *s, object start, object end) except -1
    cdef int _ready_to_write(self, Segment *seg, size_t need, size_t mapped_v, size_t prep_v, size_t win,
                             bint buffer) except -1
