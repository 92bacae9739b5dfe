/* The IO filter's compiled write path: the per-write loop of one NBD connection, run with the GIL released.
 *
 * Python (vra_appliance/iofilter/native.py) owns everything else: the handshake, buffers and their
 * renewal, READ/FLUSH/TRIM/WRITE_ZEROES and every other rare command, errors, the freeze gate's waits, the
 * dirty map and the split stream's connection. This file owns, per connection, the loop
 *     receive request header + payload straight into the receive buffer (a slab of the split ring)
 *     -> pwrite to the volume -> publish a REF frame into the split ring -> queue the simple reply
 * and, shared with Python, the split ring's writer (frames, head, seq, doorbell) so that both publish
 * under one mutex.
 *
 * Write order (issue 19 part 1): a per-volume mutex is held from pwrite until the write is handed to the
 * split stream (published into the ring here, or handed to Python: "staged"), so overlapping writes of
 * several connections reach the volume and the split stream in the same order. Python's zeroing takes the
 * same mutex. Lock order: volume, then ring; C never calls into Python while holding either.
 *
 * The freeze gate: `held` is set by Python while a freeze holds the volume; a write counts itself in
 * `inflight` first, then looks at `held` (both sequentially consistent, as Python's side: set held, then
 * read inflight), and a held write returns to Python, which waits at the gate.
 *
 * Layouts are mirrored by ctypes structures in native.py: keep both in step (the `*_LAYOUT` sizes are
 * checked at load).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

/* ---- the split ring (split_ring.py has the layout) ---- */
#define RING_ALIGN 64
#define REWIND_BYTES (1024 * 1024)
#define CTL_HEAD 8
#define CTL_FRAMES_WRITTEN 9
#define CTL_REWOUND_AT 10
#define CTL_TAIL 16
#define CTL_TAIL_SEQ 17
#define CTL_STATE 24
#define SPLIT_MAGIC 0x5A53504Cu
#define FRAME_HEADER 20
#define FRAME_WRITE 2
#define FRAME_PAD 7
#define FRAME_REF 8
#define MODE_NAP 1
#define MODE_SLEEP 2

struct zring {
    uint64_t head, tail, frames, rewound_at, rewound_to, seq;
    uint64_t size, data_size;
    uint64_t ctl_addr, data_addr;
    uint64_t slab_seq_addr, nslabs, slab_bytes;
    int64_t live, bell_fd, rang;
    uint64_t frames_sent, bytes_sent, in_place, sends;
    pthread_mutex_t lock;
    char lock_room[64 - sizeof(pthread_mutex_t)];
};

struct zvol {
    int64_t fd, size, held, inflight, read_only;
    uint64_t vol_addr, vlen;
    int64_t spare;
    pthread_mutex_t lock;
    char lock_room[64 - sizeof(pthread_mutex_t)];
};

#define STAGE_MAX 64
struct zstaged {
    int64_t offset, length, pos, err;
    uint64_t handle;
};

struct zconn {
    int64_t sock;
    uint64_t rbuf, rlen;
    int64_t start, end, reset_at;
    uint64_t sbuf, scap;
    int64_t spos;
    uint64_t ring;
    int64_t slab_pos, slab_idx;
    uint64_t vol;
    int64_t need, nstaged, locked;
    int64_t writes, bytes, err;
    uint64_t known_flags, fua_flag, max_payload;
    struct zstaged staged[STAGE_MAX];
};

const int64_t ZRING_LAYOUT = sizeof(struct zring);
const int64_t ZVOL_LAYOUT = sizeof(struct zvol);
const int64_t ZCONN_LAYOUT = sizeof(struct zconn);

enum { RC_EOF = 0, RC_PY = 1, RC_REFILL = 2, RC_HANDOFF = 3, RC_GATE = 4, RC_SOCKERR = 5 };

static inline void put_be16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static inline void put_be32(uint8_t *p, uint32_t v) { v = __builtin_bswap32(v); memcpy(p, &v, 4); }
static inline void put_be64(uint8_t *p, uint64_t v) { v = __builtin_bswap64(v); memcpy(p, &v, 8); }
static inline uint16_t get_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get_be32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return __builtin_bswap32(v); }
static inline uint64_t get_be64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return __builtin_bswap64(v); }

static inline volatile uint64_t *ctl(struct zring *r) { return (volatile uint64_t *)(uintptr_t)r->ctl_addr; }
static inline uint8_t *rdata(struct zring *r) { return (uint8_t *)(uintptr_t)r->data_addr; }

static void frame_header(uint8_t *p, uint8_t type, uint16_t vlen, uint64_t seq, uint32_t length) {
    put_be32(p, SPLIT_MAGIC);
    p[4] = type;
    p[5] = 0;
    put_be16(p + 6, vlen);
    put_be64(p + 8, seq);
    put_be32(p + 16, length);
}

/* ---- ring writer; every function below takes the ring's lock held (zring_lock) ---- */
int zring_init(struct zring *r) { return pthread_mutex_init(&r->lock, NULL); }
void zring_destroy(struct zring *r) { pthread_mutex_destroy(&r->lock); }
void zring_lock(struct zring *r) { pthread_mutex_lock(&r->lock); }
void zring_unlock(struct zring *r) { pthread_mutex_unlock(&r->lock); }

/* The consumer's tail, checked: -1 if it is unaligned, goes backwards or passes head (corrupt). */
int64_t zring_consumed(struct zring *r) {
    uint64_t tail = __atomic_load_n(&ctl(r)[CTL_TAIL], __ATOMIC_ACQUIRE);
    if (tail == r->rewound_at)
        tail = r->rewound_to;
    if (tail % RING_ALIGN || tail < r->tail || tail > r->head)
        return -1;
    return (int64_t)tail;
}

/* Start over at 0 when the consumer has caught up and the ring is past REWIND_BYTES; -1: corrupt. */
int zring_rewind(struct zring *r) {
    uint64_t pos = r->head % r->size;
    uint64_t at = REWIND_BYTES < r->size / 4 ? REWIND_BYTES : r->size / 4;
    if (pos < at)
        return 0;
    int64_t tail = zring_consumed(r);
    if (tail < 0)
        return -1;
    if ((uint64_t)tail != r->head)
        return 0;
    r->rewound_at = r->head;
    r->rewound_to = r->tail = r->head + r->size - pos;
    r->head = r->rewound_to;
    ctl(r)[CTL_REWOUND_AT] = r->rewound_at;
    return 0;
}

/* The position for a frame of `length` bytes (a PAD first if it must wrap); -1: no room, -2: corrupt. */
int64_t zring_reserve(struct zring *r, uint64_t length) {
    uint64_t need = (length + RING_ALIGN - 1) & ~(uint64_t)(RING_ALIGN - 1);
    uint64_t size = r->size, head = r->head, pos = head % size;
    uint64_t pad = size - pos < need ? size - pos : 0;
    if (head + pad + need - r->tail > size) {
        int64_t tail = zring_consumed(r);
        if (tail < 0)
            return -2;
        r->tail = (uint64_t)tail;
        if (head + pad + need - r->tail > size)
            return -1;
    }
    if (pad) {
        frame_header(rdata(r) + pos, FRAME_PAD, 0, 0, (uint32_t)(pad - FRAME_HEADER));
        pos = 0;
    }
    r->head = head + pad + need;
    r->frames++;
    return (int64_t)pos;
}

/* A WRITE frame with `n` bytes copied from `data`; -1 no room, -2 corrupt. */
int zring_put_write(struct zring *r, const uint8_t *vol, uint64_t vlen, uint64_t seq, uint64_t offset,
                    const uint8_t *data, uint64_t n) {
    uint64_t length = FRAME_HEADER + vlen + 8 + n;
    int64_t pos = zring_reserve(r, length);
    if (pos < 0)
        return (int)pos;
    uint8_t *p = rdata(r) + pos;
    frame_header(p, FRAME_WRITE, (uint16_t)vlen, seq, (uint32_t)(vlen + 8 + n));
    memcpy(p + FRAME_HEADER, vol, vlen);
    put_be64(p + FRAME_HEADER + vlen, offset);
    memcpy(p + FRAME_HEADER + vlen + 8, data, n);
    return 0;
}

/* A REF frame: `n` bytes at data position `datapos` (in slab `slab`, whose last REF seq is recorded). */
int zring_put_ref(struct zring *r, const uint8_t *vol, uint64_t vlen, uint64_t seq, uint64_t offset,
                  uint64_t datapos, uint64_t n, int64_t slab) {
    int64_t pos = zring_reserve(r, FRAME_HEADER + vlen + 24);
    if (pos < 0)
        return (int)pos;
    uint8_t *p = rdata(r) + pos;
    frame_header(p, FRAME_REF, (uint16_t)vlen, seq, (uint32_t)(vlen + 24));
    memcpy(p + FRAME_HEADER, vol, vlen);
    put_be64(p + FRAME_HEADER + vlen, offset);
    put_be64(p + FRAME_HEADER + vlen + 8, datapos);
    put_be64(p + FRAME_HEADER + vlen + 16, n);
    if (slab >= 0 && (uint64_t)slab < r->nslabs)
        ((uint64_t *)(uintptr_t)r->slab_seq_addr)[slab] = seq;
    return 0;
}

/* A complete small frame (ZERO, MARK) copied in. */
int zring_put_frame(struct zring *r, const uint8_t *frame, uint64_t n) {
    int64_t pos = zring_reserve(r, n);
    if (pos < 0)
        return (int)pos;
    memcpy(rdata(r) + pos, frame, n);
    return 0;
}

/* Data before head: the release store keeps the order (TSO on x86-64 anyway). */
void zring_publish(struct zring *r) {
    ctl(r)[CTL_FRAMES_WRITTEN] = r->frames;
    __atomic_store_n(&ctl(r)[CTL_HEAD], r->head, __ATOMIC_RELEASE);
}

/* After publishing: ring the consumer's doorbell if it sleeps (or naps and `urgent` or the ring fills),
 * once per sleep epoch. The fence orders the head store before the state load. */
void zring_bell(struct zring *r, int urgent) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (!r->live || r->bell_fd < 0)
        return;
    int64_t word = (int64_t)ctl(r)[CTL_STATE];
    if (word == r->rang)
        return;
    int mode = word & 3;
    if (!(mode == MODE_SLEEP || (mode == MODE_NAP && (urgent || r->head - r->tail > r->size / 4))))
        return;
    r->rang = word;
    (void)send((int)r->bell_fd, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* ---- volumes ---- */
int zvol_init(struct zvol *v) { return pthread_mutex_init(&v->lock, NULL); }
void zvol_destroy(struct zvol *v) { pthread_mutex_destroy(&v->lock); }
void zvol_lock(struct zvol *v) { pthread_mutex_lock(&v->lock); }
void zvol_unlock(struct zvol *v) { pthread_mutex_unlock(&v->lock); }
void zvol_set_held(struct zvol *v, int64_t held) { __atomic_store_n(&v->held, held, __ATOMIC_SEQ_CST); }
int64_t zvol_inflight(struct zvol *v) { return __atomic_load_n(&v->inflight, __ATOMIC_SEQ_CST); }

/* Python handed the staged writes over: unlock the volume, they are no longer in flight. */
void zconn_release(struct zconn *c) {
    struct zvol *v = (struct zvol *)(uintptr_t)c->vol;
    if (c->nstaged)
        __atomic_sub_fetch(&v->inflight, c->nstaged, __ATOMIC_SEQ_CST);
    c->nstaged = 0;
    if (c->locked) {
        c->locked = 0;
        pthread_mutex_unlock(&v->lock);
    }
}

/* ---- the connection loop ---- */
static int send_replies(struct zconn *c) {
    uint8_t *p = (uint8_t *)(uintptr_t)c->sbuf;
    int64_t done = 0;
    while (done < c->spos) {
        ssize_t n = send((int)c->sock, p + done, (size_t)(c->spos - done), MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            c->err = errno;
            return -1;
        }
        done += n;
    }
    c->spos = 0;
    return 0;
}

/* Make `need` bytes available from start: RC_* to return, or -1 when they are there. */
static int fill(struct zconn *c, int64_t need) {
    uint8_t *buf = (uint8_t *)(uintptr_t)c->rbuf;
    while (c->end - c->start < need) {
        if ((c->start == c->end && c->end > c->reset_at) || c->start + need > (int64_t)c->rlen) {
            c->need = need;
            return c->nstaged ? RC_HANDOFF : RC_REFILL; /* Python flushes replies, then renews the buffer */
        }
        ssize_t n = recv((int)c->sock, buf + c->end, c->rlen - (uint64_t)c->end, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->nstaged)
                return RC_HANDOFF; /* replies go out only after the split of their writes */
            if (c->spos && send_replies(c) < 0)
                return RC_SOCKERR;
            n = recv((int)c->sock, buf + c->end, c->rlen - (uint64_t)c->end, 0);
        }
        if (n == 0)
            return RC_EOF; /* a write cut short: nothing of it was written */
        if (n < 0) {
            if (errno == EINTR)
                continue;
            c->err = errno;
            return RC_SOCKERR;
        }
        c->end += n;
    }
    return -1;
}

/* Queue a simple reply; zconn_run made room for it before the write. */
static void reply(struct zconn *c, uint64_t handle) {
    uint8_t *p = (uint8_t *)(uintptr_t)c->sbuf + c->spos;
    put_be32(p, 0x67446698u);
    put_be32(p + 4, 0);
    put_be64(p + 8, handle);
    c->spos += 16;
}

static int64_t pwrite_all(int fd, const uint8_t *data, int64_t n, int64_t offset, int fua) {
    int64_t done = 0;
    while (done < n) {
        struct iovec iov = {(void *)(data + done), (size_t)(n - done)};
        ssize_t w = pwritev2(fd, &iov, 1, offset + done, fua ? RWF_DSYNC : 0);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (w == 0)
            return -EIO;
        done += w;
    }
    return 0;
}

/* Publish one write received into the ring's slab; 0 done, -1 not possible (Python hands it off). */
static int publish(struct zconn *c, struct zvol *v, int64_t offset, int64_t datapos, int64_t n) {
    struct zring *r = (struct zring *)(uintptr_t)c->ring;
    int rc = -1;
    pthread_mutex_lock(&r->lock);
    if (r->live && zring_rewind(r) == 0 &&
        zring_put_ref(r, (const uint8_t *)(uintptr_t)v->vol_addr, v->vlen, r->seq, (uint64_t)offset,
                      (uint64_t)(c->slab_pos + datapos), (uint64_t)n, c->slab_idx) == 0) {
        r->seq++;
        zring_publish(r);
        r->frames_sent++;
        r->bytes_sent += (uint64_t)n;
        r->in_place++;
        r->sends++;
        zring_bell(r, 0);
        rc = 0;
    }
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* Serve plain writes until something needs Python; returns RC_*. Python hands off the staged writes
 * (c->nstaged) after every return, before anything else. */
int zconn_run(struct zconn *c) {
    struct zvol *v = (struct zvol *)(uintptr_t)c->vol;
    for (;;) {
        int rc;
        if (c->end - c->start < 28) {
            rc = fill(c, 28);
            if (rc >= 0)
                return rc;
            continue;
        }
        const uint8_t *h = (const uint8_t *)(uintptr_t)c->rbuf + c->start;
        uint32_t magic = get_be32(h);
        uint16_t flags = get_be16(h + 4), type = get_be16(h + 6);
        uint64_t handle = get_be64(h + 8), offset = get_be64(h + 16);
        uint32_t length = get_be32(h + 24);
        if (magic != 0x25609513u || type != 1 || (flags & ~c->known_flags) || length > c->max_payload ||
            v->read_only || offset > (uint64_t)v->size || length > (uint64_t)v->size - offset)
            return c->nstaged ? RC_HANDOFF : RC_PY; /* anything but a good write: Python, after the hand-off */
        int64_t need = 28 + (int64_t)length;
        if (c->end - c->start < need) {
            rc = fill(c, need);
            if (rc >= 0)
                return rc;
            continue;
        }
        if (c->spos + 16 > (int64_t)c->scap) { /* room for the reply first: none is refused after the write */
            if (c->nstaged)
                return RC_HANDOFF;
            if (send_replies(c) < 0)
                return RC_SOCKERR;
        }
        if (c->nstaged == STAGE_MAX)
            return RC_HANDOFF;
        __atomic_add_fetch(&v->inflight, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&v->held, __ATOMIC_SEQ_CST)) {
            __atomic_sub_fetch(&v->inflight, 1, __ATOMIC_SEQ_CST);
            return c->nstaged ? RC_HANDOFF : RC_GATE;
        }
        int64_t datapos = c->start + 28;
        c->start += need;
        if (!c->locked) {
            pthread_mutex_lock(&v->lock);
            c->locked = 1;
        }
        int64_t err = length ? pwrite_all((int)v->fd, (const uint8_t *)(uintptr_t)c->rbuf + datapos, length,
                                          (int64_t)offset, (flags & c->fua_flag) != 0) : 0;
        if (err == 0 && length && c->ring && c->nstaged == 0 && publish(c, v, (int64_t)offset, datapos, length) == 0) {
            c->locked = 0;
            pthread_mutex_unlock(&v->lock);
            __atomic_sub_fetch(&v->inflight, 1, __ATOMIC_SEQ_CST);
        } else if (err == 0 && length == 0) {
            if (c->nstaged == 0) {
                c->locked = 0;
                pthread_mutex_unlock(&v->lock);
            }
            __atomic_sub_fetch(&v->inflight, 1, __ATOMIC_SEQ_CST);
        } else {
            /* Not published here (no ring, a full or closed ring, or the write failed): staged for Python,
             * the volume stays locked and the write in flight until the hand-off. */
            struct zstaged *s = &c->staged[c->nstaged++];
            s->offset = (int64_t)offset;
            s->length = length;
            s->pos = datapos;
            s->err = -err;
            s->handle = handle;
            if (err == 0) {
                c->writes++;
                c->bytes += length;
                reply(c, handle);
            }
            if (c->ring || err)
                return RC_HANDOFF; /* with a ring this is the rare case: hand it off at once */
            continue;
        }
        c->writes++;
        c->bytes += length;
        reply(c, handle);
    }
}
