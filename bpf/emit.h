/* emit.h - getting records to userspace: the ring buffer, batched wakeups,
 * per-run loss counters, and the per-CPU buffer for records with paths.
 *
 * Built by BCC with -DRINGBUF_PAGES=<pages> and the flags of
 * roar.capture.features.compile_flags() (what this kernel accepts).
 */
#ifndef ROAR_EMIT_H
#define ROAR_EMIT_H

#include "roar_event.h"

/* one event with room for two paths, or a filename and an argv blob */
struct event_buf {
    struct roar_event ev;
    char data[ROAR_PATH_MAX + 2 * ROAR_ARGV_MAX];
};

BPF_HASH(lost, u64, u64, 4096);                   /* run cgroup id -> events lost */
BPF_PERCPU_ARRAY(scratch, struct event_buf, 1);
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);

#define HDR_SIZE (sizeof(struct roar_event))

static __always_inline void count_lost(u64 cg)
{
    u64 one = 1;
    u64 *n = lost.lookup(&cg);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        lost.update(&cg, &one);
}

static __always_inline void fill_header(struct roar_event *ev, u64 cg, u16 type)
{
    u64 id = bpf_get_current_pid_tgid();
    ev->ts = bpf_ktime_get_ns();
    ev->cgroup = cg;
    ev->tgid = id >> 32;
    ev->tid = (u32)id;
    ev->type = type;
    ev->flags = 0;
    ev->fd = -1;
    ev->ret = 0;
    ev->a0 = 0;
    ev->a1 = 0;
    ev->a2 = 0;
    ev->len1 = 0;
    ev->len2 = 0;
}

/* Wake the consumer only once a batch is waiting: one wakeup per record
 * would cost the consumer a context switch per record. It polls with a short
 * timeout for whatever stays below the threshold. The count is per CPU: one
 * counter shared by every CPU is a cache line that each record of every CPU
 * takes for writing (a data loader's workers on many CPUs would pass it
 * around on every open and close); per CPU it is a plain add. The ring wakes
 * after WAKE_EVERY records of any one CPU, so up to (CPUs x WAKE_EVERY) wait
 * for the poll's timeout at most, a small share of the ring on any host. */
#define WAKE_EVERY 512  /* records; must be a power of two */
#define RB_NO_WAKEUP 1
#define RB_FORCE_WAKEUP 2

BPF_PERCPU_ARRAY(emitted, u64, 1);

static __always_inline u64 wake_flag(void)
{
    u32 zero = 0;
    u64 *n = emitted.lookup(&zero);
    if (!n)
        return 0;
    /* this CPU's own counter: a program on it runs to its end before the next
     * starts there (a lost count would only move a wakeup) */
    u64 seq = *n;
    *n = seq + 1;
    return (seq & (WAKE_EVERY - 1)) == 0 ? RB_FORCE_WAKEUP : RB_NO_WAKEUP;
}

/* Emit a header-only event built on the stack. */
static __always_inline void emit_small_flags(struct roar_event *ev, u64 flags)
{
    if (events.ringbuf_output(ev, sizeof(*ev), flags) < 0)
        count_lost(ev->cgroup);
}

static __always_inline void emit_small(struct roar_event *ev)
{
    emit_small_flags(ev, wake_flag());
}

static __always_inline struct event_buf *get_buf(u64 cg, u16 type)
{
    u32 zero = 0;
    struct event_buf *b = scratch.lookup(&zero);
    if (!b) {
        count_lost(cg);
        return 0;
    }
    fill_header(&b->ev, cg, type);
    return b;
}

/* bpf_probe_read_user_str() returning what it documents, the length with the
 * NUL: for an empty string Debian's 5.10, 6.1 and 6.12 return 0 and may write
 * nothing (strncpy_from_user_nofault() counted the NUL only after a non-empty
 * string); this VM's 6.18 returns 1. Branch-free: in the argv loop one more
 * branch doubles the verifier's states past its limit. */
static __always_inline long read_user_str(char *dst, u32 size, const void *src)
{
    dst[0] = 0;
    long n = bpf_probe_read_user_str(dst, size, src);
    u64 sign = (u64)(n - 1);  /* top bit set iff n <= 0: n == 0 becomes 1, errors stay < 0 */
    asm volatile("" : "+r"(sign));
    return n + (long)(sign >> 63);
}

/* Read a NUL-terminated user string into dst (ROAR_PATH_MAX bytes). Returns
 * the length stored (with the NUL), and sets truncation/fault flags. */
static __always_inline u32 read_path(struct roar_event *ev, char *dst, const char *src)
{
    long n = read_user_str(dst, ROAR_PATH_MAX, src);
    if (n < 0) {
        ev->flags |= EVF_FAULT;
        return 0;
    }
    if (n >= ROAR_PATH_MAX)
        ev->flags |= EVF_TRUNCATED;
    return (u32)n;
}

/* Emit a buffer event of hdr + n bytes of data. */
static __always_inline void emit_buf(struct event_buf *b, u32 n)
{
    u64 size = HDR_SIZE + (u64)n;
    /* keep the bound check: the compiler can prove it, the verifier cannot */
    asm volatile("" : "+r"(size));
    if (size > sizeof(*b))
        size = sizeof(*b);
    if (events.ringbuf_output(b, size, wake_flag()) < 0)
        count_lost(b->ev.cgroup);
}

#endif
